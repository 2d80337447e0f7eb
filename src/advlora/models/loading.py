"""Reading a transformers checkpoint of one family: the loader every ``Family`` brings.

The image processor's file (``preprocessor_config.json``) is written and read by the family's transformers class
(its Pillow backend; the default backend needs torchvision, which advlora does not depend on), so a hub
checkpoint's and a folder written by ``save_model`` are read by the same call.
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import cached_file

from advlora.errors import AdvloraError
from advlora.models.base import VLModel

#: ``tokenizer_class`` values of a tokenizer that is a plain ``tokenizers`` file
GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def transformers_loader(fam: Any) -> tuple[Callable[[str, dict | None], bool], Callable[..., VLModel]]:
    """(recognise, load) of the transformers checkpoints of ``fam`` (an ``advlora.models.family.Family``):
    ``config.json`` names ``fam.model_type``."""

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


def check_hub_id(name: str, known: Iterable[str] = ()) -> None:
    """Look ``name`` (not a local folder) up on the Hugging Face hub with one request and no retries, before
    transformers reads it (its downloads retry a failed connection for about 30 s): a name the hub does not have,
    or any name while the hub cannot be reached and the name is not in the local hub cache, is one error line at
    once, with the ``known`` names (and the cached repos) close to it as "did you mean". Offline
    (``HF_HUB_OFFLINE``) the cache alone answers, later."""
    if constants.HF_HUB_OFFLINE or Path(name).exists():
        return
    try:
        HfApi().model_info(name, timeout=10)
        return
    except (RepositoryNotFoundError, HfHubHTTPError) as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if not isinstance(e, RepositoryNotFoundError) and status not in (401, 404):
            return                              # the hub answered otherwise: let transformers report it
        why = "neither a local folder nor a model on the Hugging Face hub"
    except Exception as e:  # noqa: BLE001 - httpx's connection and timeout errors, OSError, ValueError (bad ids)
        if _cached(name):
            return
        why = (f"not a local folder, and the Hugging Face hub cannot be reached "
               f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
               if not isinstance(e, ValueError) else f"neither a local folder nor a valid hub id ({e})")
    raise model_not_found(name, why, known)


def model_not_found(name: str, why: str, known: Iterable[str] = ()) -> AdvloraError:
    """The one line for a model that cannot be found: ``why``, and the ``known`` names and cached hub repos
    close to ``name`` (difflib) as "did you mean"."""
    near = difflib.get_close_matches(name, [*known, *_cached_repos()], n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join(near)}?" if near else " (advlora list models)"
    return AdvloraError(f"cannot load model {name!r}: {why}{hint}")


def _cached_repos() -> list[str]:
    """The model repos in the local hub cache (``models--org--name`` folders)."""
    try:
        return [p.name[len("models--"):].replace("--", "/") for p in Path(constants.HF_HUB_CACHE).iterdir()
                if p.name.startswith("models--")]
    except OSError:
        return []


def _cached(name: str) -> bool:
    return name in _cached_repos()


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


__all__ = ["check_hub_id", "load_transformers", "model_not_found", "transformers_loader"]
