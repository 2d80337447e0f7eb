"""The annotation formats, composed: ``FORMATS`` (name -> ``Format``), ``detect_format`` and ``read_annotations``.

Each format module declares its formats (reader and detector) in its own ``FORMATS`` tuple; this module lists
the modules and registers their formats, in the order of ``MODULES``, in ``DECLARED`` (the shared
``advlora.declarations.Declarations``; a name is declared once). Detection asks each format's detector in
declaration order (formats that look at content first, the suffix-only generic ones last) and takes the first
that recognises the file. Adding a format: see "Adding an annotation format" in docs/contracts.md.
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path

from advlora.data import classification, generic, standard, video
from advlora.data.dataset import RetrievalDataset
from advlora.data.records import Format, read_head
from advlora.declarations import Declarations
from advlora.errors import AdvloraError, choices_error

#: the format modules, in detection order (the generic, suffix-only formats last)
MODULES = (classification, standard, video, generic)

#: every declared annotation format, in detection order: the modules' ``FORMATS``, then the formats registered
#: later (``register_format``, ``registered``), placed before the generic ones
DECLARED: Declarations[Format] = Declarations("annotation format")
for _module in MODULES:
    for _fmt in _module.FORMATS:
        DECLARED.register(_fmt)
#: name -> Format, read live (a format registered later is in it)
FORMATS: Mapping[str, Format] = DECLARED.view
get_format, unregister_format = DECLARED.get, DECLARED.unregister


def _position(first: bool) -> int | None:
    """Where a format declared after import is asked: before every other (``first``), else before the generic,
    suffix-only formats (which accept any file with their suffix)."""
    if first:
        return 0
    suffix_only = {f.name for f in generic.FORMATS}
    return next((i for i, name in enumerate(DECLARED.names()) if name in suffix_only), None)


def register_format(fmt: Format, first: bool = False) -> Format:
    """Declare a format after import (a plugin's), detected before the generic formats (before all: ``first``)."""
    return DECLARED.register(fmt, _position(first))


def registered(fmt: Format, first: bool = False) -> AbstractContextManager[Format]:
    """``fmt`` declared as ``register_format`` does, for the length of a ``with`` block (a test's throw-away)."""
    return DECLARED.registered(fmt, _position(first))


def detect_format(path: Path, formats: Mapping[str, Format] | None = None) -> str:
    """The name of the first format (in declaration order) whose detector recognises ``path``."""
    formats = FORMATS if formats is None else formats
    head = read_head(path)
    for f in formats.values():
        if f.detect is not None and f.detect(path, head):
            return f.name
    raise AdvloraError(f"{path}: cannot tell the annotation format; name it with --format "
                       f"({', '.join(sorted(formats))})")


def read_annotations(path: str | Path, fmt: str | None = None, split: str | None = None,
                     image_root: str | Path | None = None, formats: Mapping[str, Format] | None = None
                     ) -> RetrievalDataset:
    """Read an annotation file; ``image_root``: the folder its image/video paths are relative to.

    ``formats`` (default ``FORMATS``) is the set of formats to read and detect with.
    """
    formats = FORMATS if formats is None else formats
    path = Path(path)
    if not path.exists():
        raise AdvloraError(f"{path}: annotation file not found")
    if path.is_dir() and fmt is None and not any(f.detect and f.detect(path, "") for f in formats.values()):
        raise AdvloraError(f"{path}: is a folder; name the annotation file inside it (a folder is read only as "
                           "one sub-folder of images per class: imagefolder)")
    fmt = fmt or detect_format(path, formats)
    if fmt not in formats:
        raise choices_error("annotation format", fmt, formats)
    if image_root is None:
        return formats[fmt].read(path, split)
    return formats[fmt].read(path, split, image_root=image_root)
