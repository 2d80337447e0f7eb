"""Frame pooling: any image ``VLModel`` presented as a video model with the same contract.

``VideoModel(base)`` accepts videos (B, F, 3, H, W) in [0, 1] wherever the base accepts images (B, 3, H, W)
(images still pass through unchanged), so clean evaluation, attacks (which perturb every frame within the
threat model) and training run on videos unchanged:

- CLIP (as CLIP4Clip's parameter-free "meanP"): each frame's unit embedding, averaged over frames, re-normalised.
- BLIP (as BLIP's / LAVIS's ``eval_retrieval_video``): ITC embedding = the projected [CLS] of each frame,
  averaged over frames, then normalised; ITM cross-attends to the patch states of all frames concatenated,
  (B, F * (1 + P), H), so ``image_states`` returns that and ``itm_logits_from_states`` works unchanged.

The wrapper shares the base's Hugging Face model (``hf_model``), so adapters attached to either are the same.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from advlora.models.base import VLModel
from advlora.models.delegate import Delegating
from advlora.models.prompts import for_templates


class VideoModel(Delegating):
    """A ``VLModel`` over videos (B, F, 3, H, W) by pooling frame features of ``base``."""

    def __init__(self, base: VLModel) -> None:
        super().__init__(base.base if isinstance(base, VideoModel) else base)

    # ---- the video contract ------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, F, 3, H, W) videos -> (B, D) pooled embeddings; (B, 3, H, W) images go to the base unchanged."""
        if images.dim() != 5:
            return self.base.encode_image(images, normalize)
        if self.base.has_itm:
            return self.embed_image_states(self.image_states(images), normalize)
        b, f = images.shape[:2]
        frames = self.base.encode_image(images.flatten(0, 1), normalize=True).view(b, f, -1)
        pooled = frames.mean(dim=1)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def image_states(self, images: torch.Tensor) -> torch.Tensor:
        """BLIP: patch states of all frames concatenated, (B, F * (1 + P), H)."""
        if images.dim() != 5:
            return self.base.image_states(images)
        b, f = images.shape[:2]
        states = self.base.image_states(images.flatten(0, 1))
        return states.reshape(b, f * states.shape[1], states.shape[2])

    def tokens_per_frame(self) -> int:
        """1 + P: the vision tower's sequence length for one frame."""
        vc = self.base.hf_model.config.vision_config
        return (int(vc.image_size) // int(vc.patch_size)) ** 2 + 1

    def embed_image_states(self, states: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Frame-averaged projected [CLS] of concatenated frame states (one frame: the base's own embedding)."""
        n = self.tokens_per_frame()
        if states.shape[1] == n or states.shape[1] % n:
            return self.base.embed_image_states(states, normalize)
        b, f = states.shape[0], states.shape[1] // n
        per_frame = self.base.embed_image_states(states.reshape(b * f, n, states.shape[2]), normalize=False)
        pooled = per_frame.view(b, f, -1).mean(dim=1)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def itm_logits_from_states(self, states: torch.Tensor, texts) -> torch.Tensor:
        return self.base.itm_logits_from_states(states, texts)


def for_dataset(model: VLModel, dataset) -> VLModel:
    """``model`` wrapped in ``VideoModel`` when ``dataset`` is a video set, in ``prompts.PromptEnsemble`` when
    it is a classification set with prompt templates (both idempotent), else ``model``."""
    if getattr(dataset, "kind", "image") == "video" and not isinstance(model, VideoModel):
        return VideoModel(model)
    return for_templates(model, getattr(dataset, "templates", None))
