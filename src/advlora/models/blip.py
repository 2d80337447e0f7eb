"""Hugging Face ``BlipForImageTextRetrieval`` behind the ``VLModel`` contract, with its ITM head.

ITC embeddings are the projected [CLS] states of the unimodal encoders, as LAVIS computes them; ITM runs
the text encoder with cross-attention to the image's patch states and reads the "match" logit.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from advlora.models.base import VLModel


class BLIPWrapper(VLModel):
    arch = "blip"
    # the attention projections of both towers, as CLIP's defaults (q, k, v, out): in the text tower the self-
    # and the cross-attention's; not the MLP's `dense` layers, which took BLIP-base's trainable count from 1.6M
    # to 2.4M (full / adapter 85 instead of 123, P3 of the bench)
    default_targets = {"vision": ["qkv", "projection"],
                       "text": ["query", "key", "value", "attention.output.dense", "crossattention.output.dense"]}
    tower_prefixes = {"vision": ("vision_model", "vision_proj"), "text": ("text_encoder", "text_proj", "itm_head")}

    @property
    def has_itm(self) -> bool:
        return True

    def image_states(self, images: torch.Tensor) -> torch.Tensor:
        """Patch states (B, 1 + P, H) of the vision tower, reused by ITC and ITM."""
        return self.hf_model.vision_model(pixel_values=self.normalize_pixels(images)).last_hidden_state

    def embed_image_states(self, states: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        feats = self.hf_model.vision_proj(states[:, 0, :]).float()
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.embed_image_states(self.image_states(images), normalize)

    def encode_text(self, texts, normalize: bool = True) -> torch.Tensor:
        tok = self._as_tokens(texts)
        out = self.hf_model.text_encoder(input_ids=tok["input_ids"], attention_mask=tok.get("attention_mask"))
        feats = self.hf_model.text_proj(out.last_hidden_state[:, 0, :]).float()
        return F.normalize(feats, dim=-1) if normalize else feats

    @property
    def logit_scale(self) -> torch.Tensor:
        # HF's retrieval model keeps no learnable temperature; BLIP's is 0.07 = exp(-logit_scale_init_value).
        value = getattr(self.hf_model.config, "logit_scale_init_value", math.log(1 / 0.07))
        return torch.tensor(math.exp(value), device=self.device)

    def itm_logits_from_states(self, states: torch.Tensor, texts) -> torch.Tensor:
        """ITM logits (B, 2) for pairs (image i, text i), from ``image_states`` output."""
        tok = self._as_tokens(texts)
        atts = torch.ones(states.shape[:-1], dtype=torch.long, device=states.device)
        out = self.hf_model.text_encoder(input_ids=tok["input_ids"], attention_mask=tok.get("attention_mask"),
                                         encoder_hidden_states=states, encoder_attention_mask=atts)
        return self.hf_model.itm_head(out.last_hidden_state[:, 0, :]).float()
