"""The annotation formats, composed: ``FORMATS`` (name -> ``Format``), ``detect_format`` and ``read_annotations``.

Each format module declares its formats (reader and detector) in its own ``FORMATS`` tuple; this module only
lists the modules. Detection asks each format's detector in the order of ``MODULES`` (formats that look at
content first, the suffix-only generic ones last) and takes the first that recognises the file. Adding a
format: see "Adding an annotation format" in docs/contracts.md.
"""
from __future__ import annotations

from pathlib import Path

from advlora.data import classification, generic, standard, video
from advlora.data.dataset import RetrievalDataset
from advlora.data.records import Format, read_head
from advlora.errors import AdvloraError, choices_error

#: the format modules, in detection order (the generic, suffix-only formats last)
MODULES = (classification, standard, video, generic)


def compose(*groups: tuple[Format, ...]) -> dict[str, Format]:
    """name -> Format over the groups, in order; a name declared twice is an error, not a silent override."""
    out: dict[str, Format] = {}
    for group in groups:
        for f in group:
            if f.name in out:
                raise ValueError(f"annotation format {f.name!r} is declared twice")
            out[f.name] = f
    return out


FORMATS: dict[str, Format] = compose(*(m.FORMATS for m in MODULES))


def register_format(fmt: Format) -> Format:
    """Declare a format after import (a plugin's): ``FORMATS`` gains it in place, detected before the generic,
    suffix-only formats."""
    if fmt.name in FORMATS:
        raise ValueError(f"annotation format {fmt.name!r} is declared twice")
    generic_names = {f.name for f in generic.FORMATS}
    items = list(FORMATS.items())
    at = next((i for i, (name, _) in enumerate(items) if name in generic_names), len(items))
    items.insert(at, (fmt.name, fmt))
    FORMATS.clear()
    FORMATS.update(items)
    return fmt


def unregister_format(name: str) -> None:
    FORMATS.pop(name, None)


def detect_format(path: Path, formats: dict[str, Format] | None = None) -> str:
    """The name of the first format (in declaration order) whose detector recognises ``path``."""
    formats = FORMATS if formats is None else formats
    head = read_head(path)
    for f in formats.values():
        if f.detect is not None and f.detect(path, head):
            return f.name
    raise AdvloraError(f"{path}: cannot tell the annotation format; name it with --format "
                       f"({', '.join(sorted(formats))})")


def read_annotations(path: str | Path, fmt: str | None = None, split: str | None = None,
                     image_root: str | Path | None = None, formats: dict[str, Format] | None = None
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
