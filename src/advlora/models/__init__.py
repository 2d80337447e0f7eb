"""Model loading: any hub id or local folder that ``from_pretrained`` reads, and the cached tiny defaults.

``BACKENDS`` maps a ``config.json`` ``model_type`` to (transformers class, wrapper class).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from advlora.errors import AdvloraError
from advlora.io import advlora_home
from advlora.models.base import VLModel
from advlora.models.blip import BLIPWrapper
from advlora.models.clip import CLIPWrapper

#: model_type -> (transformers class name, wrapper)
BACKENDS: dict[str, tuple[str, type[VLModel]]] = {
    "clip": ("CLIPModel", CLIPWrapper),
    "blip": ("BlipForImageTextRetrieval", BLIPWrapper),
}
#: names that resolve to models advlora pre-trains itself and caches under $ADVLORA_HOME/models
TINY_DEFAULTS = {"tiny-clip": "clip", "tiny-blip": "blip"}

__all__ = ["BACKENDS", "TINY_DEFAULTS", "VLModel", "load_model", "resolve_model_path", "save_model"]


#: builds a tiny default that is not cached yet: (architecture, folder to write) -> None
TinyBuilder = Callable[[str, Path], object]


def resolve_model_path(name_or_path: str, build: TinyBuilder | None = None) -> str:
    """Map ``tiny-clip`` / ``tiny-blip`` to their cached folder; other names are returned unchanged.

    A tiny default that is not cached yet is made by ``build(arch, folder)``; without ``build`` it is an error
    (models only read checkpoints; the pre-training lives in ``advlora.training.pretrain``, whose
    ``load_model`` passes its builder here, and which ``advlora.load_model`` is).
    """
    if name_or_path in TINY_DEFAULTS:
        path = advlora_home() / "models" / name_or_path
        if not (path / "config.json").exists():
            if build is None:
                raise AdvloraError(f"{name_or_path} is not pre-trained yet: run `advlora pretrain --arch "
                                   f"{TINY_DEFAULTS[name_or_path]}` (or load it with advlora.load_model, which "
                                   "pre-trains it on first use)")
            build(TINY_DEFAULTS[name_or_path], path)
        return str(path)
    return name_or_path


def load_model(name_or_path: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
               revision: str | None = None, build: TinyBuilder | None = None) -> VLModel:
    """Load a CLIP or BLIP retrieval model and wrap it (eval mode, frozen until an adapter is attached).

    Args:
        name_or_path: a hub id (``openai/clip-vit-base-patch32``, ``Salesforce/blip-itm-base-coco``), a local
            folder written by ``save_pretrained``, or ``tiny-clip`` / ``tiny-blip``.
        build: makes a tiny default that is not cached yet (see ``resolve_model_path``).
    """
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_path(name_or_path, build)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise AdvloraError(f"cannot load model {name_or_path!r}: not a local model folder and not available "
                           f"from the Hugging Face hub ({type(e).__name__})") from None
    if config.model_type not in BACKENDS:
        raise AdvloraError(f"model {name_or_path!r} has model_type {config.model_type!r}; supported: "
                           f"{', '.join(sorted(BACKENDS))}")
    cls_name, wrapper = BACKENDS[config.model_type]
    try:
        hf = getattr(transformers, cls_name).from_pretrained(path, revision=revision, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as e:
        raise AdvloraError(f"cannot load model {name_or_path!r}: {str(e).splitlines()[0]}") from None
    pre = _preprocessor(path, revision)
    image_size = _image_size(pre, config)
    mean = pre.get("image_mean", [0.48145466, 0.4578275, 0.40821073])
    std = pre.get("image_std", [0.26862954, 0.26130258, 0.27577711])
    text_cfg = config.text_config
    max_length = min(getattr(text_cfg, "max_position_embeddings", 77), getattr(tokenizer, "model_max_length", 77))
    hf.eval()
    hf.requires_grad_(False)
    model = wrapper(hf, tokenizer, image_size=image_size, mean=mean, std=std, name_or_path=name_or_path,
                    max_length=max_length)
    model.eval()  # the wrapper too, not only hf_model: attacks and evaluation check and restore the mode
    return model.to(device) if device is not None else model


def save_model(model: VLModel, out: str | Path) -> None:
    """Save weights (safetensors), tokenizer and ``preprocessor_config.json`` as a hub checkpoint carries them."""
    out = Path(out)
    model.hf_model.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    proc = "CLIPImageProcessor" if model.arch == "clip" else "BlipImageProcessor"
    pre = {"image_processor_type": proc, "do_resize": True, "size": {"height": model.image_size, "width": model.image_size},
           "crop_size": {"height": model.image_size, "width": model.image_size}, "do_center_crop": False,
           "do_normalize": True, "do_rescale": True, "rescale_factor": 1 / 255,
           "image_mean": model.mean.flatten().tolist(), "image_std": model.std.flatten().tolist()}
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))


def _preprocessor(path: str, revision: str | None) -> dict:
    from transformers.utils import cached_file

    try:
        f = cached_file(path, "preprocessor_config.json", revision=revision, _raise_exceptions_for_missing_entries=False)
    except OSError:
        f = None
    return json.loads(Path(f).read_text()) if f else {}


def _image_size(pre: dict, config) -> int:
    for key in ("crop_size", "size"):
        v = pre.get(key)
        if isinstance(v, dict):
            v = v.get("height") or v.get("shortest_edge")
        if isinstance(v, int):
            return v
    return int(config.vision_config.image_size)
