"""Hugging Face ``BlipForImageTextRetrieval`` behind the ``VLModel`` contract, with its ITM head.

ITC embeddings are the projected [CLS] states of the unimodal encoders, as LAVIS computes them; ITM runs
the text encoder with cross-attention to the image's patch states and reads the "match" logit.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BlipConfig

from advlora.models.base import VLModel
from advlora.models.family import Family


class BLIPWrapper(VLModel):
    arch = "blip"
    # the attention projections of both towers, as CLIP's defaults (q, k, v, out): in the text tower the self-
    # and the cross-attention's; not the MLP's `dense` layers, which took BLIP-base's trainable count from 1.6M
    # to 2.4M (full / adapter 85 instead of 123, P3 of the bench)
    default_targets = {"vision": ["qkv", "projection"],
                       "text": ["query", "key", "value", "attention.output.dense", "crossattention.output.dense"]}
    tower_prefixes = {"vision": ("vision_model", "vision_proj"), "text": ("text_encoder", "text_proj", "itm_head")}
    vision_tower = "vision_model"
    text_token_embedding = "text_encoder.embeddings.word_embeddings"
    text_layers = "text_encoder.encoder.layer"
    attention_selectable = False  # HF's BLIP has one attention implementation only (and warns when asked)

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

    def temperature(self) -> nn.Parameter:
        """HF's retrieval model has no learnable temperature: a fresh one at BLIP's 0.07, which
        ``keep_temperature`` stores in the config (``logit_scale_init_value``, read by ``logit_scale``)."""
        return nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def keep_temperature(self, log_scale: torch.Tensor) -> None:
        self.hf_model.config.logit_scale_init_value = float(log_scale.detach())

    def itm_logits_from_states(self, states: torch.Tensor, texts) -> torch.Tensor:
        """ITM logits (B, 2) for pairs (image i, text i), from ``image_states`` output."""
        tok = self._as_tokens(texts)
        atts = torch.ones(states.shape[:-1], dtype=torch.long, device=states.device)
        out = self.hf_model.text_encoder(input_ids=tok["input_ids"], attention_mask=tok.get("attention_mask"),
                                         encoder_hidden_states=states, encoder_attention_mask=atts)
        return self.hf_model.itm_head(out.last_hidden_state[:, 0, :]).float()


def blip_config(shape: dict, vocab_size: int = 1000, max_length: int = 32) -> BlipConfig:
    """A ``BlipConfig`` of a ``SIZES`` shape (``init``: the initializer range, default 0.02)."""
    s = shape
    text = dict(hidden_size=s["text_width"], intermediate_size=s.get("text_mlp", 4 * s["text_width"]),
                num_hidden_layers=s["text_layers"], num_attention_heads=s.get("text_heads", s["heads"]),
                vocab_size=vocab_size, max_position_embeddings=max_length, encoder_hidden_size=s["width"],
                pad_token_id=0, bos_token_id=2, sep_token_id=3, initializer_range=s.get("init", 0.02))
    # BlipVisionConfig's default initializer_range is 1e-10 (hub checkpoints overwrite it): a model trained
    # or attacked from random weights needs a real one, or every image gets the same embedding.
    vision = dict(hidden_size=s["width"], intermediate_size=s["mlp"], num_hidden_layers=s["layers"],
                  num_attention_heads=s["heads"], image_size=s["image_size"], patch_size=s["patch"],
                  initializer_range=s.get("init", 0.02))
    return BlipConfig(text_config=text, vision_config=vision, projection_dim=s["proj"],
                      image_text_hidden_size=s["proj"], initializer_range=s.get("init", 0.02))


FAMILY = Family(
    "blip", BLIPWrapper, model_type="blip", model_class="BlipForImageTextRetrieval",
    processor_class="BlipImageProcessorPil", config=blip_config,
    sizes={"blip-base": dict(width=768, layers=12, heads=12, mlp=3072, text_width=768, text_layers=12,
                             text_heads=12, text_mlp=3072, proj=256, image_size=384, patch=16)},
    # ITM triples the text passes: smaller batches. BLIP's text encoder is a post-LN BERT pooled at [CLS]: at
    # the usual init (std 0.02) a 2-layer, 64-wide one gives every caption the same embedding (cosine 0.9999)
    # and ITC barely moves (emoji ITC r_mean 3.3 after 180 steps, CLIP 9.8); std 0.1 gave 7.1 (0.2: 3.8).
    # See docs/training.md.
    pretrain=dict(epochs=40, batch_size=128, size_overrides={"init": 0.1}))
