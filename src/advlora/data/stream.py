"""Streaming pixels: a map-style dataset decoded (and augmented) item by item in DataLoader workers.

``ImageItems`` maps a key ``(index, epoch)`` to the uint8 pixels of item ``index``, decoded from its file in the
worker that asks for it (or taken from an in-memory tensor for small sets), then augmented with a generator
seeded from (seed, epoch, index): the pixels of a sample do not depend on which worker, rank or resume decoded
them. Memory is the prefetched batches, whatever the number of images.

``keep_in_memory`` chooses, by size, between one uint8 tensor (small sets: faster, and cached on disk) and
streaming; ``storage`` overrides it (``memory`` | ``stream``).

``Augment`` is the random resized crop and horizontal flip of CLIP fine-tuning: the crop's area is a fraction
``scale`` of the image and its aspect ratio in ``ratio`` (torchvision's ``RandomResizedCrop`` sampling, 10 tries
then the centre), resized back to the model's input; ``scale=(0.9, 1.0)`` is open_clip's default for training
(``AugmentationCfg.scale`` in ``open_clip/transform.py``). The crop is taken from the decoded square (the
shorter side resized to the input size, centre crop), so that an in-memory set and a streamed one give the same
pixels for the same sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advlora.data.dataset import IN_MEMORY_MAX_BYTES, RetrievalDataset
from advlora.errors import AdvloraError, choices_error

STORAGE = ("auto", "memory", "stream")


def keep_in_memory(dataset: RetrievalDataset, size: int, storage: str = "auto") -> bool:
    """Whether ``dataset`` is held as one uint8 tensor at ``size`` (``auto``: when it fits ``IN_MEMORY_MAX_BYTES``)."""
    if storage not in STORAGE:
        raise choices_error("data storage", storage, STORAGE)
    if storage != "auto":
        return storage == "memory"
    return dataset.pixel_bytes(size) <= IN_MEMORY_MAX_BYTES


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation: a function of (seed, epoch, index) only."""
    return ((int(seed) * 1_000_003 + int(epoch)) * 1_000_033 + int(index)) % (2**63 - 1)


@dataclass(frozen=True)
class Augment:
    """Random resized crop (area ``scale``, aspect ``ratio``) back to the input size, then a flip with ``flip``."""

    scale: tuple[float, float] = (0.9, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1 or not 0 < self.ratio[0] <= self.ratio[1] or not 0 <= self.flip <= 1:
            raise AdvloraError(f"augmentation: scale must be in (0, 1], ratio positive and flip in [0, 1] "
                               f"(got scale={self.scale}, ratio={self.ratio}, flip={self.flip})")

    def box(self, height: int, width: int, g: torch.Generator) -> tuple[int, int, int, int]:
        """(top, left, h, w) of the crop, sampled as torchvision's ``RandomResizedCrop.get_params``."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            r = torch.rand(2, generator=g).tolist()
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * r[0])
            aspect = math.exp(log_lo + (log_hi - log_lo) * r[1])
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=g))
                left = int(torch.randint(0, width - w + 1, (1,), generator=g))
                return top, left, h, w
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side

    def __call__(self, pixels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Augment uint8 pixels (..., 3, H, W) (all frames of a video alike) -> uint8 of the same shape."""
        height, width = pixels.shape[-2:]
        top, left, h, w = self.box(height, width, g)
        flip = bool(torch.rand(1, generator=g).item() < self.flip)
        crop = pixels[..., top:top + h, left:left + w]
        if (h, w) != (height, width):
            lead = crop.shape[:-3]
            x = crop.reshape(-1, *crop.shape[-3:]).float()
            x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
            crop = x.round_().clamp_(0, 255).to(torch.uint8).reshape(*lead, 3, height, width)
        return crop.flip(-1) if flip else crop.contiguous()


@dataclass(frozen=True)
class Failed:
    """An item that could not be decoded, carried out of the worker as a value: the one-line message."""

    message: str


class ImageItems(torch.utils.data.Dataset):
    """Map-style: key ``(index, epoch)`` (or ``index``) -> uint8 pixels of that item, decoded where it is asked.

    Args:
        memory: the set's uint8 tensor when it is held in memory (None: decode from the files).
        augment: applied with a generator seeded from (seed, epoch, index); None: the pixels as decoded.
    """

    def __init__(self, dataset: RetrievalDataset, size: int, *, augment: Augment | None = None, seed: int = 0,
                 memory: torch.Tensor | None = None) -> None:
        self.dataset, self.size, self.augment, self.seed, self.memory = dataset, int(size), augment, int(seed), memory

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> torch.Tensor | Failed:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        try:
            pixels = self.memory[index] if self.memory is not None else self.dataset.load_item(index, self.size)
        except AdvloraError as e:
            return Failed(str(e))
        if self.augment is None:
            return pixels
        return self.augment(pixels, torch.Generator().manual_seed(sample_seed(self.seed, epoch, index)))


def collate(items: list) -> torch.Tensor | Failed:
    """Stack items; the first ``Failed`` item instead, so that its message reaches the main process whole."""
    for item in items:
        if isinstance(item, Failed):
            return item
    return torch.stack(items)


def unwrap(batch):
    """A collated batch as it is, or the failed item's one line as ``AdvloraError``."""
    if isinstance(batch, Failed):
        raise AdvloraError(batch.message)
    return batch


__all__ = ["Augment", "Failed", "ImageItems", "STORAGE", "collate", "keep_in_memory", "sample_seed", "unwrap"]
