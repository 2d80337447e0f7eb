"""Model loading through the registered families: any hub id or local folder a loader recognises, and the
cached tiny defaults.

The families (``clip``, ``blip``, ``siglip``, ``siglip2``) and the loaders are declared in
``advlora.models.family`` (its docstring says how a family or a loader of another checkpoint layout registers);
each family's file holds its ``FAMILY`` and the lines below register them. ``BACKENDS`` (``model_type`` ->
transformers model class, image processor class, wrapper) is derived from them.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import transformers
from transformers import PretrainedConfig

from advlora.errors import AdvloraError
from advlora.io import advlora_home
from advlora.models import blip, clip, open_clip, siglip
from advlora.models.base import VLModel
from advlora.models.family import (
    FAMILIES,
    LOADERS,
    Family,
    Loader,
    TinyBuilder,
    add_sizes,
    family_of,
    get_family,
    register_family,
    register_loader,
    register_tiny_builder,
    tiny_builder,
    tiny_defaults,
    unsupported,
)
from advlora.models.loading import check_hub_id, load_transformers, model_not_found

# the registered families: one line each
register_family(clip.FAMILY)
register_family(blip.FAMILY)
register_family(siglip.FAMILY)
register_family(siglip.SIGLIP2)
# loaders of other checkpoint layouts, one line each, asked before the families' transformers loaders
register_loader(open_clip.LOADER)


class Backend(NamedTuple):
    """How one ``model_type`` is loaded: transformers model class, image processor class, advlora wrapper."""

    model_class: str
    processor_class: str
    wrapper: type[VLModel]


def backends() -> dict[str, Backend]:
    """``model_type`` -> ``Backend`` of every registered family."""
    return {f.model_type: Backend(f.model_class, f.processor_class, f.wrapper) for f in FAMILIES.values()}


#: module attributes read live from the registries (a family registered after import is in them):
#: ``BACKENDS`` (``backends()``: model_type -> Backend) and ``TINY_DEFAULTS`` (``tiny_defaults()``: the names that
#: resolve to models advlora pre-trains itself and caches under $ADVLORA_HOME/models)
_LIVE = {"BACKENDS": backends, "TINY_DEFAULTS": tiny_defaults}


def __getattr__(name: str):
    if name in _LIVE:
        return _LIVE[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BACKENDS", "Backend", "add_sizes", "load_transformers", "FAMILIES", "Family", "LOADERS", "Loader",
           "TINY_DEFAULTS", "VLModel", "family_of", "get_family", "backends", "load_model", "read_config",
           "register_family", "register_loader", "register_tiny_builder", "resolve_model_path", "save_model",
           "tiny_defaults"]


def resolve_model_path(name_or_path: str, build: TinyBuilder | None = None) -> str:
    """Map ``tiny-<family>`` to its cached folder; other names are returned unchanged.

    A tiny default that is not cached yet is made by ``build(family, folder)`` (default: the tiny builder of
    ``advlora.models.family``, the training stage's pre-training, imported only now); without one it is an
    error (models only read checkpoints).
    """
    defaults = tiny_defaults()
    if name_or_path in defaults:
        path = advlora_home() / "models" / name_or_path
        if not (path / "config.json").exists():
            build = build or tiny_builder()
            if build is None:
                raise AdvloraError(f"{name_or_path} is not pre-trained yet: run `advlora pretrain --arch "
                                   f"{defaults[name_or_path]}` (or load it with advlora.load_model, which "
                                   "pre-trains it on first use)")
            build(defaults[name_or_path], path)
        return str(path)
    return name_or_path


def read_config(path: str, revision: str | None = None) -> dict | None:
    """The checkpoint's ``config.json`` as a dict (a folder's or a hub repo's), None when it has none."""
    try:
        config, _ = PretrainedConfig.get_config_dict(path, revision=revision)
    except (OSError, ValueError):
        return None
    return config


def load_model(name_or_path: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
               revision: str | None = None, build: TinyBuilder | None = None) -> VLModel:
    """Load a model of any registered family and wrap it (eval mode, frozen until an adapter is attached).

    Args:
        name_or_path: a hub id (``openai/clip-vit-base-patch32``, ``google/siglip-base-patch16-224``), a local
            folder, ``tiny-clip`` / ``tiny-blip`` / ``tiny-siglip``, or an open_clip checkpoint (``hf-hub:<repo>``,
            an open_clip folder, ``open_clip:<base>+vision=<file>``; see ``advlora.models.open_clip``).
        build: makes a tiny default that is not cached yet (see ``resolve_model_path``).

    The first registered loader that recognises the checkpoint reads it. The wrapper's ``name_or_path`` is what
    ``from_pretrained`` reads (for ``tiny-clip``: its cached folder); ``alias`` keeps the name given.
    """
    path = resolve_model_path(name_or_path, build)
    known = [*tiny_defaults(), *open_clip.PRETRAINED_BASES.values()]     # the names a "did you mean" offers
    if ":" not in path:       # a hub id or a folder; open_clip's prefixed names are read by their loader
        check_hub_id(path, known)
    config = read_config(path, revision)
    for loader in LOADERS.values():
        if loader.recognise(path, config):
            return loader.load(path, device=device, dtype=dtype, revision=revision, alias=name_or_path)
    if config is None:
        raise model_not_found(name_or_path, "not a local model folder and not available from the Hugging Face hub",
                              known)
    raise unsupported(name_or_path, config)


def save_model(model: VLModel, out: str | Path) -> None:
    """Save weights (safetensors), tokenizer and the image processor file as a hub checkpoint carries them.

    The processor resizes straight to the model's square input (no centre crop), as ``normalize_pixels`` does.
    """
    out = Path(out)
    fam = family_of(model)
    model.hf_model.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    square = {"height": model.image_size, "width": model.image_size}
    options = dict(do_resize=True, size=square, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                   image_mean=model.mean.flatten().tolist(), image_std=model.std.flatten().tolist())
    options.update(fam.processor_options(model))
    getattr(transformers, fam.processor_class)(**{k: v for k, v in options.items() if v is not None}
                                               ).save_pretrained(out)
