"""Image sources of the robust evaluation: a set's pixels read batch by batch, never one float tensor of the
whole set.

Every source has a length, ``shape`` (N, *item), ``rows(indices)`` (float [0, 1] rows on the CPU, in the order
asked) and ``batches(batch_size)`` ((indices, rows) over consecutive index ranges from 0, so batch boundaries
never depend on how work was split across processes):
- ``CleanImages``: the set's uint8 pixels (4x smaller than floats), converted per batch exactly as
  ``RetrievalDataset.load_images`` converts the whole set (``float() / 255``, elementwise: bit-identical);
- ``TensorImages``: a float tensor already held (a small batch, a caller's tensor);
- ``AdvImages``: the rows one attack call wrote, per batch, as record files in a folder (``write_record``):
  ``<folder>/<first index>.safetensors`` with ``indices``, ``adv`` and the two check ``flags``; only the records
  a request touches are read;
- ``SubsetImages``: some rows of another source, renumbered from 0;
- ``Picked``: per sample the row of one of several sources (the ensemble's and a suite's per-sample worst).
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from advlora.errors import AdvloraError
from advlora.io import atomic_write_bytes


class ImageSource:
    """Pixels of N samples in [0, 1], read by rows or in consecutive batches (see the module docstring)."""

    shape: tuple[int, ...]

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[1:])

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        """(len(indices), *item) float32 rows of the samples at ``indices`` (CPU)."""
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(indices, rows) over [0, bs), [bs, 2 bs), ...: the same boundaries for every source and process."""
        for s in range(0, len(self), batch_size):
            idx = torch.arange(s, min(s + batch_size, len(self)))
            yield idx, self.rows(idx)


class CleanImages(ImageSource):
    """A set's uint8 pixels (``RetrievalDataset.load_images_uint8``), as floats one batch at a time."""

    def __init__(self, pixels: torch.Tensor) -> None:
        self.pixels = pixels
        self.shape = tuple(pixels.shape)

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        return self.pixels[torch.as_tensor(indices, dtype=torch.long)].float().div_(255.0)


class TensorImages(ImageSource):
    """A float tensor already in memory, read through the source interface."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.shape = tuple(images.shape)

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.long).to(self.images.device)]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for s in range(0, len(self), batch_size):
            yield torch.arange(s, min(s + batch_size, len(self))), self.images[s:s + batch_size]


def as_source(images: torch.Tensor | ImageSource) -> ImageSource:
    """``images`` as a source (a tensor is wrapped, a source returned as it is)."""
    return images if isinstance(images, ImageSource) else TensorImages(images)


def write_record(folder: Path, indices: torch.Tensor, rows: torch.Tensor, ok_mode: bool = True,
                 ok_range: bool = True) -> None:
    """One batch's adversarial rows and check flags as ``<folder>/<first index>.safetensors``, atomically (a
    stopped run never leaves half a record)."""
    data = save({"indices": indices.cpu().long().contiguous(), "adv": rows.detach().cpu().contiguous(),
                 "flags": torch.tensor([ok_mode, ok_range], dtype=torch.uint8)})
    atomic_write_bytes(Path(folder) / f"{int(indices[0]):09d}.safetensors", data)


def read_index(folder: Path, n: int, item_shape: Sequence[int]) -> list[tuple[Path, torch.Tensor, bool, bool]]:
    """(file, indices, eval-mode flag, input-range flag) of every record in ``folder``, without reading the pixels;
    a record of other images (an index >= ``n``, another item shape) is an ``AdvloraError``."""
    out = []
    for f in sorted(Path(folder).glob("*.safetensors")) if Path(folder).exists() else ():
        with safe_open(str(f), framework="pt") as h:
            idx, flags = h.get_tensor("indices").long(), h.get_tensor("flags")
            shape = tuple(h.get_slice("adv").get_shape())
        if len(idx) and (int(idx.max()) >= n or shape[1:] != tuple(item_shape)):
            raise AdvloraError(f"--resume: {f} does not belong to this evaluation (other images); "
                               "run without --resume to start over")
        out.append((f, idx, bool(flags[0]), bool(flags[1])))
    return out


def _gather(groups: torch.Tensor, item_shape: Sequence[int],
            fetch: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Float32 rows, one per entry of ``groups``, filled group by group: ``fetch(group, positions)`` returns
    the rows at those positions (one record file or one source read per group)."""
    out = torch.empty((len(groups), *item_shape), dtype=torch.float32)
    for g in groups.unique().tolist():
        sel = (groups == g).nonzero().squeeze(1)
        out[sel] = fetch(g, sel).to(out)
    return out


class AdvImages(ImageSource):
    """The adversarial rows of one attack call, read from its record files in ``folder`` (every sample must
    have one). ``keep``: an object owning the folder (a ``tempfile.TemporaryDirectory``), kept alive with it."""

    def __init__(self, folder: Path, n: int, item_shape: Sequence[int], keep: object = None) -> None:
        self.folder, self.keep = Path(folder), keep
        self.shape = (n, *item_shape)
        self._files: list[Path] = []
        self._file_of = torch.full((n,), -1, dtype=torch.long)
        self._pos_of = torch.zeros(n, dtype=torch.long)
        for f, idx, _, _ in read_index(self.folder, n, item_shape):
            self._file_of[idx] = len(self._files)
            self._pos_of[idx] = torch.arange(len(idx))
            self._files.append(f)
        missing = (self._file_of < 0).nonzero().squeeze(1)
        if len(missing):
            raise AdvloraError(f"{self.folder}: no adversarial rows for {len(missing)} of {n} samples (first: "
                               f"{int(missing[0])}); the processes of a distributed evaluation must share its "
                               "state folder (advlora eval --out on a shared file system)")
        self._cached: tuple[int, torch.Tensor] | None = None

    def _load(self, i: int) -> torch.Tensor:
        if self._cached is None or self._cached[0] != i:
            with safe_open(str(self._files[i]), framework="pt") as h:
                self._cached = (i, h.get_tensor("adv").float())
        return self._cached[1]

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return _gather(self._file_of[idx], self.item_shape, lambda f, sel: self._load(f)[self._pos_of[idx[sel]]])


class Spill:
    """A process-local folder that rows are written to batch by batch (``write``), then read as ``AdvImages``
    (``images``); the folder is removed when neither the spill nor its images are referenced."""

    def __init__(self, prefix: str = "advlora-adv-") -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.folder = Path(self._tmp.name)

    def write(self, indices: torch.Tensor, rows: torch.Tensor) -> None:
        write_record(self.folder, indices, rows)

    def images(self, n: int, item_shape: Sequence[int]) -> AdvImages:
        return AdvImages(self.folder, n, item_shape, keep=self._tmp)


class SubsetImages(ImageSource):
    """Rows ``indices`` of ``base``, renumbered 0..len(indices)-1 (a suite member's remaining images: its
    batches are consecutive among them, so no batch carries a finished row)."""

    def __init__(self, base: ImageSource, indices: torch.Tensor) -> None:
        self.base, self.indices = base, torch.as_tensor(indices, dtype=torch.long).cpu()
        self.shape = (len(self.indices), *base.item_shape)

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        return self.base.rows(self.indices[torch.as_tensor(indices, dtype=torch.long)])


class Picked(ImageSource):
    """Per sample i the row of ``sources[pick[i]]`` (all sources of one shape)."""

    def __init__(self, sources: Sequence[ImageSource], pick: torch.Tensor) -> None:
        self.sources, self.pick = list(sources), pick.long().cpu()
        self.shape = tuple(self.sources[0].shape)

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return _gather(self.pick[idx], self.item_shape, lambda m, sel: self.sources[m].rows(idx[sel]))


__all__ = ["AdvImages", "CleanImages", "ImageSource", "Picked", "Spill", "SubsetImages", "TensorImages",
           "as_source", "read_index", "write_record"]
