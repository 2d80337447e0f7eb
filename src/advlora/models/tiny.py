"""Randomly initialised CLIP and BLIP of named sizes: the tiny default's architecture, ViT-B/32 and BLIP-base.

No download: these build ``transformers`` configs directly. Tests, benchmarks and ``pretrain`` use them.
"""
from __future__ import annotations

import torch
from transformers import BlipConfig, BlipForImageTextRetrieval, CLIPConfig, CLIPModel

from advlora.errors import choices_error
from advlora.models.base import VLModel
from advlora.models.blip import BLIPWrapper
from advlora.models.clip import CLIPWrapper
from advlora.models.tokenizer import build_tokenizer

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

#: size name -> (vision kwargs, text kwargs, projection dim, image size)
SIZES: dict[str, dict] = {
    # test-sized: a few thousand parameters, runs in milliseconds
    "test": dict(width=32, layers=2, heads=2, mlp=64, text_width=32, text_layers=2, proj=32, image_size=32, patch=8),
    # the embedded default's architecture (pre-trained by ``advlora pretrain``)
    # (narrow and shallow: on 2 CPU cores, pre-training gets more updates per second out of a small model)
    "tiny": dict(width=64, layers=3, heads=4, mlp=256, text_width=64, text_layers=2, proj=64, image_size=32,
                 patch=8),
    # real sizes, for benchmarks (random weights)
    "vit-b32": dict(width=768, layers=12, heads=12, mlp=3072, text_width=512, text_layers=12, text_heads=8,
                    text_mlp=2048, proj=512, image_size=224, patch=32),
    "blip-base": dict(width=768, layers=12, heads=12, mlp=3072, text_width=768, text_layers=12, text_heads=12,
                      text_mlp=3072, proj=256, image_size=384, patch=16),
}


def clip_config(size: str = "test", vocab_size: int = 1000, max_length: int = 32, **over) -> CLIPConfig:
    s = {**_size(size), **over}
    text = dict(hidden_size=s["text_width"], intermediate_size=s.get("text_mlp", 4 * s["text_width"]),
                num_hidden_layers=s["text_layers"], num_attention_heads=s.get("text_heads", s["heads"]),
                vocab_size=vocab_size, max_position_embeddings=max_length, pad_token_id=0, bos_token_id=2,
                eos_token_id=3)
    vision = dict(hidden_size=s["width"], intermediate_size=s["mlp"], num_hidden_layers=s["layers"],
                  num_attention_heads=s["heads"], image_size=s["image_size"], patch_size=s["patch"])
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=s["proj"])


def blip_config(size: str = "test", vocab_size: int = 1000, max_length: int = 32, **over) -> BlipConfig:
    s = {**_size(size), **over}
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


def _size(size: str) -> dict:
    if size not in SIZES:
        raise choices_error("model size", size, SIZES)
    return SIZES[size]


def random_model(arch: str = "clip", size: str = "test", *, seed: int = 0, tokenizer=None,
                 max_length: int = 32) -> VLModel:
    """A randomly initialised wrapper of the given architecture and size (no download).

    Nothing on disk holds it, so ``name_or_path`` is "" and ``alias`` names it (``random-clip-test``).
    """
    if tokenizer is None:
        tokenizer = build_tokenizer(_DEFAULT_CORPUS, vocab_size=300, max_length=max_length)
    torch.manual_seed(seed)
    vocab = len(tokenizer)
    if arch == "clip":
        hf = CLIPModel(clip_config(size, vocab_size=vocab, max_length=max_length))
        cls = CLIPWrapper
    elif arch == "blip":
        hf = BlipForImageTextRetrieval(blip_config(size, vocab_size=vocab, max_length=max_length))
        cls = BLIPWrapper
    else:
        raise choices_error("architecture", arch, ("clip", "blip"))
    hf.eval()
    return cls(hf, tokenizer, image_size=_size(size)["image_size"], mean=CLIP_MEAN, std=CLIP_STD,
               name_or_path="", alias=f"random-{arch}-{size}", max_length=max_length)


_DEFAULT_CORPUS = [
    "grinning face with big eyes", "flag: japan", "red apple", "dog face", "cat face", "waving hand: medium skin tone",
    "thumbs up", "smiling face with sunglasses", "rocket", "house with garden", "moving left to right", "a photo of",
    "two people walking", "a man riding a horse", "birthday cake", "sun behind cloud", "green heart", "blue car",
]
