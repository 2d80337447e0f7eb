"""The CLIP family: Hugging Face ``CLIPModel`` behind the ``VLModel`` contract, softmax InfoNCE."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import CLIPConfig

from advlora.models.base import VLModel
from advlora.models.family import Family


class CLIPWrapper(VLModel):
    arch = "clip"
    default_targets = {"vision": ["q_proj", "k_proj", "v_proj", "out_proj"],
                       "text": ["q_proj", "k_proj", "v_proj", "out_proj"]}
    tower_prefixes = {"vision": ("vision_model", "visual_projection"), "text": ("text_model", "text_projection")}
    vision_tower = "vision_model"
    text_token_embedding = "text_model.embeddings.token_embedding"
    text_layers = "text_model.encoder.layers"

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


def clip_config(shape: dict, vocab_size: int = 1000, max_length: int = 32) -> CLIPConfig:
    """A ``CLIPConfig`` of a ``SIZES`` shape (special token ids those of ``advlora.models.tokenizer``)."""
    s = shape
    text = dict(hidden_size=s["text_width"], intermediate_size=s.get("text_mlp", 4 * s["text_width"]),
                num_hidden_layers=s["text_layers"], num_attention_heads=s.get("text_heads", s["heads"]),
                vocab_size=vocab_size, max_position_embeddings=max_length, pad_token_id=0, bos_token_id=2,
                eos_token_id=3)
    vision = dict(hidden_size=s["width"], intermediate_size=s["mlp"], num_hidden_layers=s["layers"],
                  num_attention_heads=s["heads"], image_size=s["image_size"], patch_size=s["patch"])
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=s["proj"])


def _square_processor(model: VLModel) -> dict:
    square = {"height": model.image_size, "width": model.image_size}
    return {"crop_size": square, "do_center_crop": False}


FAMILY = Family(
    "clip", CLIPWrapper, model_type="clip", model_class="CLIPModel", processor_class="CLIPImageProcessorPil",
    config=clip_config, processor_options=_square_processor,
    sizes={"vit-b32": dict(width=768, layers=12, heads=12, mlp=3072, text_width=512, text_layers=12, text_heads=8,
                           text_mlp=2048, proj=512, image_size=224, patch=32)})
