"""CLIP's prompt ensemble: a ``VLModel`` whose text embedding of a class name averages its prompts.

``PromptEnsemble(base, templates)``: ``encode_text(names)`` puts each name into every template, encodes the
prompts with ``base``, averages their unit embeddings and renormalises (as CLIP's zero-shot classifier is
built), so a classification set's gallery is one embedding per class; everything else is ``base``'s. The
logits the attacks and metrics read are then ``logit_scale`` x the cosine to these class embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from advlora.models.base import VLModel

#: prompts encoded per forward pass of the text tower
PROMPT_BATCH = 256


class PromptEnsemble(VLModel):
    """``base`` with class names encoded as the renormalised mean of their prompts' embeddings."""

    def __init__(self, base: VLModel, templates: tuple[str, ...]) -> None:
        torch.nn.Module.__init__(self)
        if isinstance(base, PromptEnsemble):
            base = base.base
        self.base = base
        self.templates = tuple(templates)
        self.arch = base.arch
        self.default_targets = base.default_targets
        self.tower_prefixes = base.tower_prefixes
        self.training = base.training   # the wrapper's flag describes the evaluated model

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base":
                raise
            return getattr(self._modules["base"], name)

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.base.logit_scale

    @property
    def has_itm(self) -> bool:
        return self.base.has_itm

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.base.tokenize(texts)

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        return self.base.normalize_pixels(images)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.base.encode_image(images, normalize)

    def encode_text(self, texts, normalize: bool = True) -> torch.Tensor:
        """Class names -> (C, D) prompt-ensembled embeddings (unit when ``normalize``; tokens pass to the base)."""
        if not isinstance(texts, (list, tuple)):
            return self.base.encode_text(texts, normalize)
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
