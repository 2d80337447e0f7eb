"""The in-memory retrieval set every format is read into, and image loading into pixel tensors.

A ``RetrievalDataset`` is a list of unique images (paths relative to ``root``) and a flat list of captions
with ``txt2img[j]``, the image caption j describes. Images load through Pillow as float tensors in [0, 1],
resized on the shorter side and centre-cropped to a square, as the CLIP/BLIP processors do. A set whose
uint8 pixels fit in ``IN_MEMORY_MAX_BYTES`` (the embedded default, a 5k test split at 224 px) can be held in
memory and is cached as uint8 under ``$ADVLORA_HOME/tensors`` keyed by the files and the size; a larger one
is not copied there: it is streamed item by item (``advlora.data.stream``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from advlora.errors import AdvloraError
from advlora.io import advlora_home
from advlora.progress import BatchProgress

#: the largest uint8 pixel tensor a set is held in memory (and cached on disk) as: 1 GiB (5,000 images at 224 px)
IN_MEMORY_MAX_BYTES = 1 << 30


@dataclass
class RetrievalDataset:
    root: Path
    images: list[str]
    captions: list[str]
    txt2img: torch.Tensor
    name: str = "data"
    kind: str = "image"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.txt2img = torch.as_tensor(self.txt2img, dtype=torch.long)
        if self.txt2img.numel() != len(self.captions):
            raise ValueError("one txt2img entry per caption is required")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def img2txt(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.images]
        for j, i in enumerate(self.txt2img.tolist()):
            out[i].append(j)
        return out

    def image_path(self, i: int) -> Path:
        p = Path(self.images[i])
        return p if p.is_absolute() else self.root / p

    def subset(self, image_indices: list[int] | torch.Tensor) -> RetrievalDataset:
        """The images at ``image_indices`` (in that order) with all their captions."""
        idx = [int(i) for i in image_indices]
        remap = {old: new for new, old in enumerate(idx)}
        caps, t2i = [], []
        for j, i in enumerate(self.txt2img.tolist()):
            if i in remap:
                caps.append(self.captions[j])
                t2i.append(remap[i])
        meta = {k: v for k, v in self.meta.items() if not k.startswith("_")}  # not the loaded-tensor cache
        return type(self)(self.root, [self.images[i] for i in idx], caps, torch.tensor(t2i, dtype=torch.long),
                          self.name, self.kind, meta)

    def limit(self, n: int | None, seed: int = 0) -> RetrievalDataset:
        """A deterministic subset of ``n`` images (a seeded permutation, then sorted), or self when n is None."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise AdvloraError(f"--limit must be >= 1, got {n}")
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(self), generator=g)[:n].sort().values
        return self.subset(keep)

    def load_images(self, size: int, indices: list[int] | None = None, cache: bool = True) -> torch.Tensor:
        """(N, 3, size, size) float tensor in [0, 1] of the images at ``indices`` (all by default)."""
        all_u8 = self._load_uint8(size, cache)
        sel = all_u8 if indices is None else all_u8[torch.as_tensor(indices, dtype=torch.long)]
        return sel.float().div_(255.0)

    def load_images_uint8(self, size: int, cache: bool = True) -> torch.Tensor:
        """(N, 3, size, size) uint8 tensor of all images (shared, do not modify): 4x smaller than floats."""
        return self._load_uint8(size, cache)

    def _load_uint8(self, size: int, cache: bool) -> torch.Tensor:
        key = (size, cache)
        mem = self.meta.setdefault("_u8", {})
        if key in mem:
            return mem[key]
        path = self._cache_path(size) if cache and self.pixel_bytes(size) <= IN_MEMORY_MAX_BYTES else None
        if path is not None and path.exists():
            from safetensors.torch import load_file

            u8 = load_file(str(path))["images"]
        else:
            u8 = self._decode_all(size)
            if path is not None:
                _save_tensor_cache(path, u8)
        mem[key] = u8
        return u8

    def _decode_all(self, size: int) -> torch.Tensor:
        """Every item decoded into one preallocated uint8 tensor (no list of copies beside it), with progress
        (a bar on a terminal, a log line every 30 s otherwise: ``advlora.progress``)."""
        out = torch.empty(len(self), *self.item_shape(size), dtype=torch.uint8)
        bar = BatchProgress(f"{self.name}: decoding", len(self), unit=self.kind)
        try:
            for i in range(len(self)):
                out[i] = self.load_item(i, size)
                bar.update()
        finally:
            bar.close()
        return out

    def load_item(self, i: int, size: int) -> torch.Tensor:
        """uint8 pixels of item i (images: (3, size, size); video sets override this)."""
        return load_image_uint8(self.image_path(i), size)

    def item_shape(self, size: int) -> tuple[int, ...]:
        """The shape of one item's pixels at ``size``."""
        return (3, size, size)

    def pixel_bytes(self, size: int) -> int:
        """Bytes of the whole set as one uint8 tensor at ``size``."""
        return len(self) * int(torch.Size(self.item_shape(size)).numel())

    def _cache_key(self, size: int) -> str:
        return f"{size}"

    def _cache_path(self, size: int) -> Path | None:
        h = hashlib.sha256(f"{self._cache_key(size)}|{self.root.resolve()}".encode())
        for i in range(len(self)):
            p = self.image_path(i)
            try:
                st = p.stat()
            except OSError:
                raise AdvloraError(f"{p}: {self.kind} file is missing") from None
            h.update(f"|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
        return advlora_home() / "tensors" / f"{self.name}-{size}-{h.hexdigest()[:16]}.safetensors"


def load_image_uint8(path, size: int, name: str | None = None) -> torch.Tensor:
    """Read one image with Pillow: RGB, shorter side resized to ``size`` (bicubic), centre crop -> (3, size, size).

    ``path``: a file path or a binary file object (a shard member); ``name``: what an error names (the path).
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    name = name or str(path)
    try:
        with Image.open(path) as im:
            arr = np.asarray(square_crop(im.convert("RGB"), size), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise AdvloraError(f"{name}: image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise AdvloraError(f"{name}: cannot read image ({type(e).__name__})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def square_crop(im, size: int):
    """A Pillow RGB image resized on its shorter side to ``size`` (bicubic) and centre-cropped to a square."""
    from PIL import Image

    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def _save_tensor_cache(path: Path, u8: torch.Tensor) -> None:
    import tempfile

    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        os.close(fd)
        save_file({"images": u8.contiguous()}, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs time
