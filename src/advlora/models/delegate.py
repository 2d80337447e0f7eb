"""``Delegating``: a ``VLModel`` that presents another one (``base``) with one part changed.

The frame-pooling video wrapper (``advlora.models.video``) and the prompt ensemble (``advlora.models.prompts``)
change one side of the contract each (how images, or class names, become embeddings); everything else is the
base's: the family's declarations, its loss and logit bias, tokenisation, normalisation and the BLIP parts. A
wrapper shares the base's Hugging Face model, so adapters attached to either are the same.
"""
from __future__ import annotations

import torch

from advlora.models.base import VLModel


class Delegating(VLModel):
    """``base``'s ``VLModel`` contract, method by method; subclasses override the part they change."""

    def __init__(self, base: VLModel) -> None:
        torch.nn.Module.__init__(self)
        self.base = base
        # the family's declarations (a duck-typed model without one keeps VLModel's default)
        for name in ("arch", "default_targets", "tower_prefixes", "text_padding", "resize_mode",
                     "attention_selectable", "text_token_embedding", "text_layers"):
            setattr(self, name, getattr(base, name, getattr(VLModel, name)))
        # a new Module says training=True whatever its base is in: take the base's mode, so that the wrapper's
        # flag (which the robust report's "mode restored" line reads) describes the evaluated model
        self.training = base.training

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

    @property
    def logit_bias(self) -> torch.Tensor | None:
        return self.base.logit_bias

    def contrastive_loss(self, image_features: torch.Tensor, text_features: torch.Tensor,
                         positives: torch.Tensor | None = None, scale: torch.Tensor | None = None) -> torch.Tensor:
        return self.base.contrastive_loss(image_features, text_features, positives, scale)

    def temperature(self) -> torch.nn.Parameter:
        return self.base.temperature()

    def keep_temperature(self, log_scale: torch.Tensor) -> None:
        self.base.keep_temperature(log_scale)

    def recompute_layers(self) -> list[torch.nn.Module]:
        return self.base.recompute_layers()

    def vision_sites(self):
        return self.base.vision_sites()

    def tower_of(self, module_name: str) -> str | None:
        return self.base.tower_of(module_name)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.base.tokenize(texts)

    def tokenize_plain(self, texts: list[str], reserve: int = 0) -> dict[str, torch.Tensor]:
        return self.base.tokenize_plain(texts, reserve)

    def text_prompt_sites(self):
        return self.base.text_prompt_sites()

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        return self.base.normalize_pixels(images)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.base.encode_image(images, normalize)

    def encode_text(self, texts, normalize: bool = True) -> torch.Tensor:
        return self.base.encode_text(texts, normalize)

    def image_states(self, images: torch.Tensor) -> torch.Tensor:
        return self.base.image_states(images)

    def embed_image_states(self, states: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.base.embed_image_states(states, normalize)

    def itm_logits_from_states(self, states: torch.Tensor, texts) -> torch.Tensor:
        return self.base.itm_logits_from_states(states, texts)


__all__ = ["Delegating"]
