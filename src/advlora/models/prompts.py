"""CLIP's prompt ensemble: a ``VLModel`` whose text embedding of a class name averages its prompts.

``PromptEnsemble(base, templates)``: ``encode_text(names)`` puts each name into every template, encodes the
prompts with ``base``, averages their unit embeddings and renormalises (as CLIP's zero-shot classifier is
built), so a classification set's gallery is one embedding per class; everything else is ``base``'s. The
logits the attacks and metrics read are then ``logit_scale`` x the cosine to these class embeddings. A model with
a learned text prompt (``advlora.models.text_prompt``: CoOp's context) encodes each class name once, in its
prompt ("[ctx] name."), instead of in the templates.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from advlora.models.base import VLModel
from advlora.models.delegate import Delegating
from advlora.models.text_prompt import text_prompt_of

#: prompts encoded per forward pass of the text tower
PROMPT_BATCH = 256


class PromptEnsemble(Delegating):
    """``base`` with class names encoded as the renormalised mean of their prompts' embeddings."""

    def __init__(self, base: VLModel, templates: tuple[str, ...]) -> None:
        super().__init__(base.base if isinstance(base, PromptEnsemble) else base)
        self.templates = tuple(templates)

    def encode_text(self, texts, normalize: bool = True) -> torch.Tensor:
        """Class names -> (C, D) prompt-ensembled embeddings (unit when ``normalize``; tokens pass to the base)."""
        if not isinstance(texts, (list, tuple)):
            return self.base.encode_text(texts, normalize)
        learned = text_prompt_of(self.base)
        if learned is not None and learned.enabled:   # the learned context takes the templates' place
            batches = [list(texts[i:i + PROMPT_BATCH]) for i in range(0, len(texts), PROMPT_BATCH)]
            return torch.cat([self.base.encode_text(learned.tokenize_classes(self.base, b), normalize)
                              for b in batches])
        prompts = [t.replace("{}", name) for name in texts for t in self.templates]
        emb = torch.cat([self.base.encode_text(prompts[i:i + PROMPT_BATCH], normalize=True)
                         for i in range(0, len(prompts), PROMPT_BATCH)])
        mean = emb.view(len(texts), len(self.templates), -1).mean(dim=1)
        return F.normalize(mean, dim=-1) if normalize else mean


def for_templates(model: VLModel, templates: tuple[str, ...] | None) -> VLModel:
    """``model`` wrapped in ``PromptEnsemble`` when ``templates`` are given (idempotent), else ``model``."""
    if not templates or (isinstance(model, PromptEnsemble) and model.templates == tuple(templates)):
        return model
    return PromptEnsemble(model, templates)


__all__ = ["PROMPT_BATCH", "PromptEnsemble", "for_templates"]
