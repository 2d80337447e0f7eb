"""The SigLIP and SigLIP 2 families: ``SiglipModel`` / ``Siglip2Model`` behind the ``VLModel`` contract.

SigLIP (Zhai et al. 2023) trains with a pairwise sigmoid loss on ``exp(logit_scale) * cos + logit_bias``; the
bias is constant over a row, so rankings (retrieval, attacks) do not see it, but training does. Its processor
resizes to the square input with a bicubic filter, no crop, mean = std = 0.5; its text tower has no attention
mask in training: captions are padded to ``max_length`` (64) and pooled at the last position, so the
tokenize policy is ``max_length`` padding and ``encode_text`` passes no mask. The vision tower pools with a
multi-head attention head (an ``nn.MultiheadAttention``, whose ``out_proj`` a bare ``out_proj`` target would
also match): the default adapter targets name ``self_attn.*``, which only the encoder layers hold.

SigLIP 2's fixed-resolution checkpoints carry ``model_type: siglip`` (the SigLIP family reads them);
``Siglip2Model`` is the NaFlex variant, whose vision tower takes pre-patchified pixels (B, N, p * p * C) with a
patch mask and the patch grid. Here an image is resized (bilinear, as its processor) to the largest square
grid of patches the checkpoint's ``max_num_patches`` allows and patchified differentiably, in the processor's
order (row-major patches, each flattened as (p, p, C)), so attacks still live in pixel space.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Siglip2Config, SiglipConfig

from advlora.losses import sigmoid_contrastive
from advlora.models.base import VLModel
from advlora.models.family import Family

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
#: the encoder layers' attention projections (the pooling head's attention is ``head.attention``)
ENCODER_ATTENTION = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"]


class SiglipWrapper(VLModel):
    arch = "siglip"
    default_targets = {"vision": list(ENCODER_ATTENTION), "text": list(ENCODER_ATTENTION)}
    tower_prefixes = {"vision": ("vision_model",), "text": ("text_model",)}
    text_token_embedding = "text_model.embeddings.token_embedding"
    text_layers = "text_model.encoder.layers"
    resize_mode = "bicubic"
    text_padding = "max_length"
    vision_tower = "vision_model"

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        feats = self.hf_model.vision_model(pixel_values=self.normalize_pixels(images)).pooler_output.float()
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, texts, normalize: bool = True) -> torch.Tensor:
        tok = self._as_tokens(texts)
        feats = self.hf_model.text_model(input_ids=tok["input_ids"]).pooler_output.float()
        return F.normalize(feats, dim=-1) if normalize else feats

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.hf_model.logit_scale.exp().float().reshape(())

    @property
    def logit_bias(self) -> torch.Tensor:
        return self.hf_model.logit_bias.float().reshape(())

    def contrastive_loss(self, image_features: torch.Tensor, text_features: torch.Tensor,
                         positives: torch.Tensor | None = None, scale: torch.Tensor | None = None) -> torch.Tensor:
        """SigLIP's sigmoid loss with the model's logit bias."""
        return sigmoid_contrastive(image_features, text_features, self.logit_scale if scale is None else scale,
                                   self.logit_bias, positives)


class Siglip2Wrapper(SiglipWrapper):
    arch = "siglip2"
    resize_mode = "bilinear"
    # NaFlex's encoder masks attention by the patch mask it builds from ``pixel_attention_mask`` and its embeddings
    # read patchified pixels: neither takes a prompt token or a frame, so the family takes no vision prompts
    vision_tower = None

    @classmethod
    def input_size(cls, processor: Any, config: Any) -> int:
        """The largest square of whole patches within the processor's (else the config's) patch budget."""
        vc = config.vision_config
        patch = int(getattr(processor, "patch_size", None) or vc.patch_size)
        budget = int(getattr(processor, "max_num_patches", None) or vc.num_patches)
        return patch * math.isqrt(budget)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = self.normalize_pixels(images)
        b, c, h, w = x.shape
        p = int(self.hf_model.config.vision_config.patch_size)
        nh, nw = h // p, w // p
        patches = x.reshape(b, c, nh, p, nw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, nh * nw, p * p * c)
        mask = torch.ones(b, nh * nw, dtype=torch.long, device=x.device)
        shapes = torch.tensor([[nh, nw]] * b, dtype=torch.long, device=x.device)
        out = self.hf_model.vision_model(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes)
        feats = out.pooler_output.float()
        return F.normalize(feats, dim=-1) if normalize else feats


def _text(s: dict, vocab_size: int, max_length: int) -> dict:
    # no separate projections: the text head maps onto the vision width, the embedding both towers share
    return dict(hidden_size=s["text_width"], intermediate_size=s.get("text_mlp", 4 * s["text_width"]),
                num_hidden_layers=s["text_layers"], num_attention_heads=s.get("text_heads", s["heads"]),
                vocab_size=vocab_size, max_position_embeddings=max_length, pad_token_id=0, bos_token_id=2,
                eos_token_id=3, projection_size=s["width"])


def _vision(s: dict) -> dict:
    return dict(hidden_size=s["width"], intermediate_size=s["mlp"], num_hidden_layers=s["layers"],
                num_attention_heads=s["heads"], patch_size=s["patch"])


def siglip_config(shape: dict, vocab_size: int = 1000, max_length: int = 32) -> SiglipConfig:
    """A ``SiglipConfig`` of a ``SIZES`` shape (``proj`` unused: SigLIP embeds at the vision width)."""
    return SiglipConfig(text_config=_text(shape, vocab_size, max_length),
                        vision_config={**_vision(shape), "image_size": shape["image_size"]})


def siglip2_config(shape: dict, vocab_size: int = 1000, max_length: int = 32) -> Siglip2Config:
    """A NaFlex ``Siglip2Config`` whose patch budget is the square grid of the shape's ``image_size``."""
    grid = shape["image_size"] // shape["patch"]
    return Siglip2Config(text_config=_text(shape, vocab_size, max_length),
                         vision_config={**_vision(shape), "num_patches": grid * grid})


def _sigmoid_init(hf) -> None:
    """SigLIP's initial temperature and bias (log 10 and -10): with many more negatives than positives a bias
    that starts negative keeps the first steps from being spent on the imbalance."""
    with torch.no_grad():
        hf.logit_scale.fill_(math.log(10.0))
        hf.logit_bias.fill_(-10.0)


def _siglip2_processor(model: VLModel) -> dict:
    p = int(model.hf_model.config.vision_config.patch_size)
    return {"patch_size": p, "max_num_patches": (model.image_size // p) ** 2, "size": None}


FAMILY = Family(
    "siglip", SiglipWrapper, model_type="siglip", model_class="SiglipModel",
    processor_class="SiglipImageProcessorPil", config=siglip_config, mean=SIGLIP_MEAN, std=SIGLIP_STD,
    init_random=_sigmoid_init,
    sizes={"siglip-base": dict(width=768, layers=12, heads=12, mlp=3072, text_width=768, text_layers=12,
                               text_heads=12, text_mlp=3072, proj=768, image_size=224, patch=16,
                               max_length=64)},
    # every caption is padded to max_length (no mask): the emoji captions' longest is well under 24 tokens
    pretrain=dict(max_length=24))

SIGLIP2 = Family(
    "siglip2", Siglip2Wrapper, model_type="siglip2", model_class="Siglip2Model",
    processor_class="Siglip2ImageProcessorPil", config=siglip2_config, mean=SIGLIP_MEAN, std=SIGLIP_STD,
    processor_options=_siglip2_processor, init_random=_sigmoid_init, tiny=False)
