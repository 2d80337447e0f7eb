"""A folder of images without captions: training data for objectives that read images alone (``fare``).

``--data FOLDER`` with such an objective trains on every image file under ``FOLDER/<split>`` when that
subfolder exists (ImageNet's ``train/``), else under ``FOLDER``, searched recursively in sorted order (class
subfolders are read as images; their names are not labels here). The result is a ``RetrievalDataset`` with no
captions (``meta["captions"] = False``); validation and the final test read an annotated set (``--eval-data``).
"""
from __future__ import annotations

from pathlib import Path

from advlora.data.classification import is_imagefolder
from advlora.data.dataset import RetrievalDataset, load_image_uint8
from advlora.errors import AdvloraError

#: file suffixes read as images (case-insensitive)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def is_caption_free_folder(spec: str | Path) -> bool:
    """``spec`` names a folder of images without captions: a folder (annotation formats and the embedded sets name
    files or names) that is not a class-folder tree (``imagefolder``, a classification set)."""
    try:
        return Path(spec).is_dir() and not is_imagefolder(Path(spec))
    except (OSError, ValueError):
        return False


def image_files(root: Path) -> list[str]:
    """Paths relative to ``root`` of every image file under it, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image_folder(path: str | Path, split: str | None = None) -> RetrievalDataset:
    """The images under ``path/split`` (when that folder exists) or ``path``, without captions."""
    path = Path(path)
    if not path.is_dir():
        raise AdvloraError(f"{path}: not a folder of images")
    root = path / split if split and (path / split).is_dir() else path
    images = image_files(root)
    if not images:
        raise AdvloraError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder or below it")
    name = f"{path.name}-{split}" if root != path else path.name
    return RetrievalDataset(root, images, [], [], name=name, meta={"captions": False})


def check_image_folder(path: str | Path, split: str | None = None, size: int = 32) -> RetrievalDataset:
    """``read_image_folder`` with its first image decoded: a bad folder is one line before any work."""
    ds = read_image_folder(path, split)
    load_image_uint8(ds.image_path(0), size)
    return ds


__all__ = ["IMAGE_SUFFIXES", "check_image_folder", "image_files", "is_caption_free_folder", "read_image_folder"]
