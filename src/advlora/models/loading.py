"""Reading a transformers checkpoint of one family: the loader every ``Family`` brings.

The image processor's file (``preprocessor_config.json``) is written and read by the family's transformers class
(its Pillow backend; the default backend needs torchvision, which advlora does not depend on), so a hub
checkpoint's and a folder written by ``save_model`` are read by the same call.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import cached_file

from advlora.errors import AdvloraError
from advlora.models.base import VLModel

#: ``tokenizer_class`` values of a tokenizer that is a plain ``tokenizers`` file
GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def transformers_loader(fam: Any) -> tuple[Callable[[str, dict | None], bool], Callable[..., VLModel]]:
    """(recognise, load) of the transformers checkpoints of ``fam`` (an ``advlora.models.family.Family``): ``config.json`` names ``fam.model_type``."""

    def recognise(path: str, config: dict | None) -> bool:
        return config is not None and config.get("model_type") == fam.model_type

    def load(path: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
             revision: str | None = None, alias: str | None = None) -> VLModel:
        return load_transformers(fam, path, device=device, dtype=dtype, revision=revision, alias=alias)

    return recognise, load


def load_transformers(fam: Any, path: str, *, device: str | torch.device | None = None,
                      dtype: torch.dtype | None = None, revision: str | None = None,
                      alias: str | None = None) -> VLModel:
    """``fam``'s model, tokenizer and image processor from ``path`` (a folder or hub id), wrapped, in eval mode
    and frozen until an adapter is attached."""
    name = alias or path
    try:
        hf = getattr(transformers, fam.model_class).from_pretrained(path, revision=revision, dtype=dtype)
        tokenizer = _tokenizer(path, revision)
    except (OSError, ValueError) as e:
        raise AdvloraError(f"cannot load model {name!r}: {str(e).splitlines()[0]}") from None
    processor = _image_processor(fam.processor_class, path, revision)
    config = hf.config
    mean = list(processor.image_mean) if processor is not None else list(fam.mean)
    std = list(processor.image_std) if processor is not None else list(fam.std)
    text_cfg = config.text_config
    max_length = min(getattr(text_cfg, "max_position_embeddings", 77), getattr(tokenizer, "model_max_length", 77))
    hf.eval()
    hf.requires_grad_(False)
    model = fam.wrapper(hf, tokenizer, image_size=fam.wrapper.input_size(processor, config), mean=mean, std=std,
                        name_or_path=path, max_length=max_length, alias=name)
    model.eval()  # the wrapper too, not only hf_model: attacks and evaluation check and restore the mode
    return model.to(device) if device is not None else model


def _tokenizer(path: str, revision: str | None):
    """The checkpoint's tokenizer. A generic ``tokenizers`` one (what ``save_model`` writes for the tiny models'
    WordPiece) is read as itself: ``AutoTokenizer`` would map some model types (``siglip2``) to their own class,
    with another padding side and normaliser."""
    file = cached_file(path, "tokenizer_config.json", revision=revision, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)
    if file is not None and json.loads(Path(file).read_text()).get("tokenizer_class") in GENERIC_TOKENIZERS:
        return PreTrainedTokenizerFast.from_pretrained(path, revision=revision)
    return AutoTokenizer.from_pretrained(path, revision=revision)


def _image_processor(processor_class: str, path: str, revision: str | None):
    """The checkpoint's image processor (its transformers class), or None when it has no processor file."""
    try:
        return getattr(transformers, processor_class).from_pretrained(path, revision=revision)
    except OSError:
        return None


__all__ = ["load_transformers", "transformers_loader"]
