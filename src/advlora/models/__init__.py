"""Model loading: any hub id or local folder that ``from_pretrained`` reads, and the cached tiny defaults.

``BACKENDS`` maps a ``config.json`` ``model_type`` to its transformers model class, its image processor class and
the wrapper. The image processor's file (``preprocessor_config.json``) is written and read by that transformers
class, so a hub checkpoint's and a folder written by ``save_model`` are read by the same call. The classes are
the Pillow backends of ``CLIPImageProcessor`` / ``BlipImageProcessor`` (same file, same ``image_processor_type``;
the default backend needs torchvision, which advlora does not depend on).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer

from advlora.errors import AdvloraError
from advlora.io import advlora_home
from advlora.models.base import VLModel
from advlora.models.blip import BLIPWrapper
from advlora.models.clip import CLIPWrapper
from advlora.models.open_clip import convert_to_folder, is_open_clip_checkpoint

class Backend(NamedTuple):
    """How one ``model_type`` is loaded: transformers model class, image processor class, advlora wrapper."""

    model_class: str
    processor_class: str
    wrapper: type[VLModel]


#: model_type -> Backend
BACKENDS: dict[str, Backend] = {
    "clip": Backend("CLIPModel", "CLIPImageProcessorPil", CLIPWrapper),
    "blip": Backend("BlipForImageTextRetrieval", "BlipImageProcessorPil", BLIPWrapper),
}
#: normalisation when a folder carries no image processor file (CLIP's, which BLIP shares)
DEFAULT_MEAN = (0.48145466, 0.4578275, 0.40821073)
DEFAULT_STD = (0.26862954, 0.26130258, 0.27577711)
#: names that resolve to models advlora pre-trains itself and caches under $ADVLORA_HOME/models
TINY_DEFAULTS = {"tiny-clip": "clip", "tiny-blip": "blip"}

__all__ = ["BACKENDS", "Backend", "TINY_DEFAULTS", "VLModel", "load_model", "resolve_model_path", "save_model"]


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
            folder written by ``save_pretrained``, ``tiny-clip`` / ``tiny-blip``, or an open_clip checkpoint
            (``hf-hub:<repo>``, an open_clip folder, ``open_clip:<base>+vision=<file>``; see
            ``advlora.models.open_clip``).
        build: makes a tiny default that is not cached yet (see ``resolve_model_path``).

    The wrapper's ``name_or_path`` is what ``from_pretrained`` reads (for ``tiny-clip``: its cached folder);
    ``alias`` keeps the name given (``tiny-clip``), for reports.
    """
    path = resolve_model_path(name_or_path, build)
    if is_open_clip_checkpoint(path):  # converted once into a cached transformers CLIP folder
        path = convert_to_folder(path, revision=revision)
        revision = None
    try:
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise AdvloraError(f"cannot load model {name_or_path!r}: not a local model folder and not available "
                           f"from the Hugging Face hub ({type(e).__name__})") from None
    if config.model_type not in BACKENDS:
        raise AdvloraError(f"model {name_or_path!r} has model_type {config.model_type!r}; supported: "
                           f"{', '.join(sorted(BACKENDS))}")
    backend = BACKENDS[config.model_type]
    try:
        hf = getattr(transformers, backend.model_class).from_pretrained(path, revision=revision, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as e:
        raise AdvloraError(f"cannot load model {name_or_path!r}: {str(e).splitlines()[0]}") from None
    processor = _image_processor(backend, path, revision)
    image_size = _image_size(processor, config)
    mean = list(processor.image_mean) if processor is not None else list(DEFAULT_MEAN)
    std = list(processor.image_std) if processor is not None else list(DEFAULT_STD)
    text_cfg = config.text_config
    max_length = min(getattr(text_cfg, "max_position_embeddings", 77), getattr(tokenizer, "model_max_length", 77))
    hf.eval()
    hf.requires_grad_(False)
    model = backend.wrapper(hf, tokenizer, image_size=image_size, mean=mean, std=std, name_or_path=path,
                            max_length=max_length, alias=name_or_path)
    model.eval()  # the wrapper too, not only hf_model: attacks and evaluation check and restore the mode
    return model.to(device) if device is not None else model


def save_model(model: VLModel, out: str | Path) -> None:
    """Save weights (safetensors), tokenizer and the image processor file as a hub checkpoint carries them.

    The processor resizes straight to the model's square input (no centre crop), as ``normalize_pixels`` does.
    """
    out = Path(out)
    model.hf_model.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    square = {"height": model.image_size, "width": model.image_size}
    processor = getattr(transformers, BACKENDS[model.arch].processor_class)
    extra = {"crop_size": square, "do_center_crop": False} if model.arch == "clip" else {}
    processor(do_resize=True, size=square, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
              image_mean=model.mean.flatten().tolist(), image_std=model.std.flatten().tolist(),
              **extra).save_pretrained(out)


def _image_processor(backend: Backend, path: str, revision: str | None):
    """The checkpoint's image processor (its transformers class), or None when it has no processor file."""
    try:
        return getattr(transformers, backend.processor_class).from_pretrained(path, revision=revision)
    except OSError:
        return None


def _image_size(processor, config) -> int:
    """The processor's output side (the crop when it crops, else the resize target), else the vision config's."""
    if processor is not None:
        for v in (getattr(processor, "crop_size", None), processor.size):
            side = v if isinstance(v, int) or v is None else (getattr(v, "height", None)
                                                              or getattr(v, "shortest_edge", None))
            if isinstance(side, int):
                return side
    return int(config.vision_config.image_size)
