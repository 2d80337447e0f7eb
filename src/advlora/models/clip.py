"""Hugging Face ``CLIPModel`` behind the ``VLModel`` contract."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from advlora.models.base import VLModel


class CLIPWrapper(VLModel):
    arch = "clip"
    default_targets = {"vision": ["q_proj", "k_proj", "v_proj", "out_proj"],
                       "text": ["q_proj", "k_proj", "v_proj", "out_proj"]}
    tower_prefixes = {"vision": ("vision_model", "visual_projection"), "text": ("text_model", "text_projection")}

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        m = self.hf_model
        pooled = m.vision_model(pixel_values=self.normalize_pixels(images)).pooler_output
        feats = m.visual_projection(pooled).float()
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, texts, normalize: bool = True) -> torch.Tensor:
        m = self.hf_model
        tok = self._as_tokens(texts)
        pooled = m.text_model(input_ids=tok["input_ids"], attention_mask=tok.get("attention_mask")).pooler_output
        feats = m.text_projection(pooled).float()
        return F.normalize(feats, dim=-1) if normalize else feats

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.hf_model.logit_scale.exp().float()
