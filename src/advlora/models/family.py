"""The backbone seam: what advlora knows about a model family, declared once, in the family's own file.

A family (``advlora.models.clip``, ``blip``, ``siglip``) declares a ``Family``: its ``VLModel`` wrapper (pixel-space
``encode_image`` with the family's resize and normalisation, the tokenize policy, the contrastive loss that
training and pre-training call, the default adapter targets per tower, the layers recomputation checkpoints),
the transformers model and image-processor classes of the ``config.json`` ``model_type`` it reads, a random
configuration of any named size (tests, benchmarks, the tiny pre-trained default) and the real sizes it adds.

How a loader registers. ``load_model`` asks each registered ``Loader``, in order, ``recognise(path_or_id,
config) -> bool`` (``config``: the checkpoint's ``config.json`` as a dict, None when it has none) and the
first that says yes ``load(path_or_id, device=, dtype=, revision=, alias=) -> VLModel`` reads it. Every family
brings the loader of its transformers checkpoints (``transformers_loader``); a loader for another layout (an
open_clip checkpoint converted on load into a ``CLIPModel`` folder, then handed to the CLIP family's
``load``) is a ``Loader`` passed to ``register_loader``, placed before the transformers loaders with
``first=True``; a benchmark size it brings (an open_clip LAION ViT-B/32's shape) is declared on the family that
builds it with ``add_sizes``. Adding a family is one file declaring ``FAMILY`` plus one line in ``advlora.models``
(``register_family``). Families and loaders are ``advlora.declarations.Declarations`` (``DECLARED``,
``DECLARED_LOADERS``): registering a family registers its loader and adds its sizes, and ``registered`` (one for
the length of a ``with`` block, tests) or ``unregister_family`` takes both back; ``FAMILIES`` and ``LOADERS`` are
their read-only, live views.

The tiny pre-trained defaults (``tiny-clip``, ``tiny-blip``, ``tiny-siglip``: ``tiny-<family>`` of every family
with ``tiny=True``) are read from ``$ADVLORA_HOME/models``; one not cached yet is made by the tiny builder:
``TINY_BUILDER``, the reference ``"advlora.training.pretrain:build_tiny"`` resolved (imported) only when a default
is first built, so ``load_model("tiny-clip")`` works after ``import advlora.models`` alone while models never
import the training stage. ``register_tiny_builder`` installs another (a callable or a reference; tests).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlora.declarations import Declarations
from advlora.errors import AdvloraError
from advlora.models.base import VLModel
from advlora.models.loading import transformers_loader
from advlora.plugins import resolve

#: CLIP's normalisation (BLIP shares it): the default of a folder without an image processor file
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Loader:
    """Recognises a checkpoint layout and loads it into a ``VLModel``."""

    name: str
    recognise: Callable[[str, dict | None], bool]
    load: Callable[..., VLModel]


@dataclass(frozen=True)
class Family:
    """Everything the rest of advlora needs to know about one backbone family.

    Attributes:
        name: the family's name: ``VLModel.arch``, ``random_model``'s ``arch``, ``tiny-<name>``.
        wrapper: the ``VLModel`` subclass (``arch == name``).
        model_type: the ``config.json`` ``model_type`` its checkpoints carry.
        model_class: the transformers model class (a name in ``transformers``).
        processor_class: the image processor class that writes and reads ``preprocessor_config.json`` (the
            Pillow backend: the default one imports torchvision).
        config: ``(shape, vocab_size, max_length) -> transformers config`` of a random model; ``shape`` is an
            entry of ``advlora.models.tiny.SIZES`` with the caller's overrides.
        sizes: named real sizes this family adds to ``SIZES`` (random weights, for benchmarks; ``advlora bench
            --size`` builds the family that declares the size).
        mean, std: normalisation of a random model and of a folder without an image processor file.
        processor_options: ``model -> kwargs`` added to the processor ``save_model`` writes.
        init_random: applied to a freshly built random transformers model (after the seeded construction).
        pretrain: overrides of ``advlora.training.pretrain.PretrainConfig`` for its tiny default.
        tiny: whether ``tiny-<name>`` is a pre-trained default.
    """

    name: str
    wrapper: type[VLModel]
    model_type: str
    model_class: str
    processor_class: str
    config: Callable[[dict, int, int], Any]
    sizes: dict[str, dict] = field(default_factory=dict)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    processor_options: Callable[[VLModel], dict] = lambda model: {}
    init_random: Callable[[Any], None] | None = None
    pretrain: dict = field(default_factory=dict)
    tiny: bool = True

    def __post_init__(self) -> None:
        if self.wrapper.arch != self.name:
            raise AdvloraError(f"family {self.name!r}: its wrapper's arch is {self.wrapper.arch!r}")

    @property
    def loader(self) -> Loader:
        """The loader of this family's transformers checkpoints (``config.json`` names ``model_type``)."""
        return Loader(f"transformers:{self.name}", *transformers_loader(self))


#: size name -> shape of a random model (``advlora.models.tiny.SIZES``): the shared ones, then the sizes the
#: families add. Keys: width, layers, heads, mlp (vision), text_width, text_layers, text_heads, text_mlp, proj,
#: image_size, patch; optional: ``init`` (BLIP's initializer range), ``max_length`` (caption tokens of
#: ``random_for_size``, default 32).
SIZES: dict[str, dict] = {
    # test-sized: a few thousand parameters, runs in milliseconds
    "test": dict(width=32, layers=2, heads=2, mlp=64, text_width=32, text_layers=2, proj=32, image_size=32, patch=8),
    # the embedded defaults' architecture (pre-trained by ``advlora pretrain``)
    # (narrow and shallow: on 2 CPU cores, pre-training gets more updates per second out of a small model)
    "tiny": dict(width=64, layers=3, heads=4, mlp=256, text_width=64, text_layers=2, proj=64, image_size=32,
                 patch=8),
}
#: makes a tiny default that is not cached yet: (family name, folder to write) -> None
TinyBuilder = Callable[[str, Path], object]
#: the tiny defaults' builder, the pre-training of the training stage: a reference resolved at its first call
TINY_BUILDER = "advlora.training.pretrain:build_tiny"
_TINY_BUILDER: list[TinyBuilder | str] = [TINY_BUILDER]

#: the loaders, asked in order (``register_loader``; each family registers its transformers loader)
DECLARED_LOADERS: Declarations[Loader] = Declarations("model loader")
LOADERS: Mapping[str, Loader] = DECLARED_LOADERS.view


def _add_parts(family: Family) -> None:
    DECLARED_LOADERS.register(family.loader)
    SIZES.update(family.sizes)


def _remove_parts(family: Family) -> None:
    DECLARED_LOADERS.unregister(family.loader.name)
    for size in family.sizes:
        SIZES.pop(size, None)


#: every declared family (``Declarations``; its loader and real sizes come and go with it): ``register_family``,
#: ``registered`` (a ``with`` block), ``unregister_family``, ``get_family`` (an unknown name: one error line
#: listing the registered ones); ``FAMILIES``: name -> Family, in registration order, read live
DECLARED: Declarations[Family] = Declarations("model family", on_register=_add_parts, on_unregister=_remove_parts)
FAMILIES: Mapping[str, Family] = DECLARED.view
register_family, unregister_family, registered, get_family = (DECLARED.register, DECLARED.unregister,
                                                              DECLARED.registered, DECLARED.get)


def add_sizes(name: str, sizes: dict[str, dict]) -> None:
    """Declare more named sizes of the registered family ``name`` (``advlora bench --size`` builds them with its
    ``config``): the place for a size that a loader's module brings, e.g. an open_clip ViT-B/32's shape."""
    fam = get_family(name)
    fam.sizes.update(sizes)
    SIZES.update(sizes)


def register_loader(loader: Loader, first: bool = True) -> Loader:
    """Add a loader of another checkpoint layout; ``first``: asked before every loader registered so far (the
    families' transformers loaders among them), else after them."""
    return DECLARED_LOADERS.register(loader, 0 if first else None)


def family_of(model: VLModel) -> Family:
    return get_family(model.arch)


def family_of_size(size: str) -> Family:
    """The family that declares the real size ``size``; the first registered for the shared ones (test, tiny)."""
    for fam in FAMILIES.values():
        if size in fam.sizes:
            return fam
    return next(iter(FAMILIES.values()))


def tiny_defaults() -> dict[str, str]:
    """``tiny-<family>`` -> family name, for every family with a pre-trained tiny default."""
    return {f"tiny-{f.name}": f.name for f in FAMILIES.values() if f.tiny}


def register_tiny_builder(build: TinyBuilder | str) -> None:
    """Install the function ``(family name, folder) -> None`` that makes a tiny default not cached yet, or its
    ``"module:function"`` reference (imported when a default is first built)."""
    _TINY_BUILDER[:] = [build]


def tiny_builder() -> TinyBuilder | None:
    """The installed tiny builder, a reference resolved now; None when none is installed."""
    if not _TINY_BUILDER:
        return None
    build = _TINY_BUILDER[0]
    return resolve(build) if isinstance(build, str) else build


def unsupported(name_or_path: str, config: dict | None) -> AdvloraError:
    kind = (config or {}).get("model_type")
    known = ", ".join(sorted({f.model_type for f in FAMILIES.values()}))
    what = f"has model_type {kind!r}" if kind else "is no checkpoint any registered loader recognises"
    return AdvloraError(f"model {name_or_path!r} {what}; supported model types: {known}")


__all__ = ["CLIP_MEAN", "add_sizes", "CLIP_STD", "DECLARED", "DECLARED_LOADERS", "FAMILIES", "Family", "LOADERS",
           "Loader", "SIZES", "get_family", "family_of", "family_of_size", "register_family", "register_loader",
           "register_tiny_builder", "registered", "TINY_BUILDER", "TinyBuilder", "tiny_builder", "tiny_defaults",
           "unregister_family"]
