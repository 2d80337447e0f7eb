"""Zero-shot classification sets: images with one class each, a gallery of class names and prompt templates.

A ``ClassificationDataset`` is a ``RetrievalDataset`` whose texts are the class names (one per class, the
gallery an image is classified against) and whose images each carry a class index in ``labels``. It has no
caption -> image map (``txt2img`` is empty: a class describes many images); ``img2txt`` gives each image its
class. Evaluation reads the task from the type (``advlora.evaluation.tasks``): an image's "caption" rank among
the class texts is its classification rank, so image-to-text R@1 over this gallery is top-1 accuracy.

``templates`` are the prompts a class name is put into; the class embedding is the renormalised mean of the
unit embeddings of its prompts (CLIP's prompt ensemble, ``advlora.models.prompts``). ``IMAGENET_TEMPLATES`` are
the 80 templates CLIP's authors used for ImageNet (Radford et al. 2021, their prompt-engineering notebook).

The ``imagefolder`` format reads a folder with one sub-folder per class (``root/<class>/<image>``), or one such
folder per split (``root/<split>/<class>/<image>``): the layout is detected. Optional files in ``root``:
``classnames.txt`` (one line per class folder: ``folder<TAB>name``, or just the names in sorted folder order;
default: the folder name with ``_`` as spaces) and ``templates.txt`` (one template per line, ``{}`` where the
class name goes; default ``IMAGENET_TEMPLATES``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from advlora.data.dataset import RetrievalDataset
from advlora.data.records import Format, problem
from advlora.errors import AdvloraError

#: file suffixes read as images in a class folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "templates.txt"

#: CLIP's 80 prompt templates for ImageNet zero-shot classification (the OpenAI CLIP prompt-engineering notebook)
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)


@dataclass
class ClassificationDataset(RetrievalDataset):
    """Images (``images``, ``root``), their classes (``labels``, (N,) long), the class names (``captions``, the
    gallery) and the prompt templates. ``txt2img`` is empty (no text belongs to one image)."""

    labels: torch.Tensor = None
    templates: tuple[str, ...] = IMAGENET_TEMPLATES
    task: str = field(default="classification", init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.txt2img = torch.zeros(0, dtype=torch.long)
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        self.templates = tuple(self.templates)
        if self.labels.numel() != len(self.images):
            raise ValueError("one label per image is required")
        if self.labels.numel() and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.captions)):
            raise ValueError("labels must index the class names")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError("every prompt template needs a {} for the class name")

    @property
    def classes(self) -> list[str]:
        return self.captions

    @property
    def img2txt(self) -> list[list[int]]:
        return [[int(c)] for c in self.labels.tolist()]

    def prompts(self, name: str) -> list[str]:
        """The prompts of one class name: each template filled in."""
        return [t.replace("{}", name) for t in self.templates]

    def subset(self, image_indices: list[int] | torch.Tensor) -> ClassificationDataset:
        """The images at ``image_indices`` (in that order); every class stays in the gallery."""
        idx = [int(i) for i in image_indices]
        meta = {k: v for k, v in self.meta.items() if not k.startswith("_")}
        return ClassificationDataset(self.root, [self.images[i] for i in idx], list(self.captions),
                                     torch.zeros(0, dtype=torch.long), self.name, self.kind, meta,
                                     labels=self.labels[torch.as_tensor(idx, dtype=torch.long)],
                                     templates=self.templates)


# ---- the imagefolder format -------------------------------------------------------------------------------
def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_class_root(folder: Path) -> bool:
    """A folder whose sub-folders hold images (at least one image in some sub-folder, none loose beside them)."""
    try:
        dirs = _class_dirs(folder)
        return bool(dirs) and any(_images_in(d) for d in dirs)
    except OSError:
        return False


def split_root(path: Path, split: str | None) -> Path:
    """The folder of one split: ``path/<split>`` when that is a class folder root, else ``path`` itself."""
    if split and (path / split).is_dir() and _is_class_root(path / split):
        return path / split
    return path


def is_imagefolder(path: Path, head: str = "") -> bool:
    """A folder with one sub-folder of images per class, directly or under a split folder."""
    path = Path(path)
    if not path.is_dir():
        return False
    return _is_class_root(path) and not any(_is_class_root(d) for d in _class_dirs(path)) or any(
        _is_class_root(d) for d in _class_dirs(path) if d.name in ("train", "val", "test", "validation"))


def read_class_names(path: Path, folders: list[str]) -> list[str]:
    """The class names of ``folders`` from ``classnames.txt`` (``folder<TAB>name`` lines, or one name per line
    in sorted folder order); without the file, the folder names with ``_`` as spaces."""
    if not path.is_file():
        return [f.replace("_", " ") for f in folders]
    lines = [ln.rstrip("\n") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if all("\t" in ln for ln in lines):
        mapping = dict(ln.split("\t", 1) for ln in lines)
        missing = [f for f in folders if f not in mapping]
        if missing:
            raise AdvloraError(f"{path}: no name for class folder(s) {', '.join(missing[:5])}")
        return [mapping[f].strip() for f in folders]
    if len(lines) != len(folders):
        raise AdvloraError(f"{path}: {len(lines)} names for {len(folders)} class folders (one per line, in "
                           "sorted folder order, or folder<TAB>name lines)")
    return [ln.strip() for ln in lines]


def read_templates(path: Path) -> tuple[str, ...]:
    """Prompt templates from a file (one per line with ``{}``); ``IMAGENET_TEMPLATES`` when it does not exist."""
    if not path.is_file():
        return IMAGENET_TEMPLATES
    out = tuple(ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip())
    bad = [t for t in out if "{}" not in t]
    if not out or bad:
        raise AdvloraError(f"{path}: every template needs a {{}} for the class name"
                           + (f" (not: {bad[0]!r})" if bad else " (the file is empty)"))
    return out


def read_imagefolder(path: str | Path, split: str | None = None, image_root: str | Path | None = None
                     ) -> ClassificationDataset:
    """A class-folder tree as a ``ClassificationDataset`` (``image_root`` is not used: the tree is the root)."""
    path = Path(path)
    folder = split_root(path, split)
    dirs = _class_dirs(folder)
    if not dirs:
        raise AdvloraError(f"{folder}: no class folders (expected <class>/<image> or <split>/<class>/<image>)")
    names = read_class_names(path / CLASSNAMES_FILE, [d.name for d in dirs])
    images, labels = [], []
    for c, d in enumerate(dirs):
        files = _images_in(d)
        if not files:
            problem(f"{d}: class folder without images")
        images += [str(p.relative_to(folder)) for p in files]
        labels += [c] * len(files)
    if not images:
        raise AdvloraError(f"{folder}: no images in its class folders ({', '.join(IMAGE_SUFFIXES)})")
    name = path.name + (f"-{folder.name}" if folder != path else "")
    return ClassificationDataset(folder, images, names, torch.zeros(0, dtype=torch.long), name,
                                 labels=torch.tensor(labels), templates=read_templates(path / TEMPLATES_FILE))


FORMATS = (Format("imagefolder", read_imagefolder, is_imagefolder,
                  doc="one folder of images per class (optionally under a split folder); classnames.txt, "
                      "templates.txt optional"),)

__all__ = ["ClassificationDataset", "FORMATS", "IMAGENET_TEMPLATES", "is_imagefolder", "read_imagefolder"]
