"""Randomly initialised models of any registered family and named size (no download).

``SIZES`` holds the shared shapes (``test``, ``tiny``: the tiny defaults' architecture) and the real sizes the
families declare (``vit-b32``, ``blip-base``, ``siglip-base``); each family turns a shape into its transformers
config. Tests, benchmarks and ``pretrain`` use them.
"""
from __future__ import annotations

import torch
import transformers

from advlora.errors import choices_error
from advlora.models.base import VLModel
from advlora.models.family import SIZES, family_of_size, get_family
from advlora.models.tokenizer import build_tokenizer

__all__ = ["SIZES", "random_for_size", "random_model", "shape"]


def shape(size: str) -> dict:
    """The shape of a named size (an error line listing the sizes otherwise)."""
    if size not in SIZES:
        raise choices_error("model size", size, SIZES)
    return SIZES[size]


def random_model(arch: str = "clip", size: str = "test", *, seed: int = 0, tokenizer=None,
                 max_length: int = 32) -> VLModel:
    """A randomly initialised wrapper of family ``arch`` and size ``size`` (no download).

    Nothing on disk holds it, so ``name_or_path`` is "" and ``alias`` names it (``random-clip-test``).
    """
    fam = get_family(arch)
    s = shape(size)
    if tokenizer is None:
        tokenizer = build_tokenizer(_DEFAULT_CORPUS, vocab_size=300, max_length=max_length)
    torch.manual_seed(seed)
    hf = getattr(transformers, fam.model_class)(fam.config(s, len(tokenizer), max_length))
    if fam.init_random is not None:
        fam.init_random(hf)
    hf.eval()
    return fam.wrapper(hf, tokenizer, image_size=s["image_size"], mean=fam.mean, std=fam.std, name_or_path="",
                       alias=f"random-{arch}-{size}", max_length=max_length)


def random_for_size(size: str, *, seed: int = 0) -> VLModel:
    """A random model of the family that declares ``size`` (the first registered family for test / tiny), its
    captions as long as the shape's ``max_length`` (default 32)."""
    s = shape(size)
    return random_model(family_of_size(size).name, size, seed=seed, max_length=s.get("max_length", 32))


_DEFAULT_CORPUS = [
    "grinning face with big eyes", "flag: japan", "red apple", "dog face", "cat face", "waving hand: medium skin tone",
    "thumbs up", "smiling face with sunglasses", "rocket", "house with garden", "moving left to right", "a photo of",
    "two people walking", "a man riding a horse", "birthday cake", "sun behind cloud", "green heart", "blue car",
]
