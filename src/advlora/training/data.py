"""Training batches: a seeded sampler whose position is the global step, so that a resume is exact.

Each epoch is a seeded permutation of the training images, each image with one caption drawn for that epoch;
batch ``k`` of epoch ``e`` depends only on (seed, e, k). Positives in a batch: captions of the same image, of
an image with the same caption set (several renders of one emoji), or the same caption string.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from advlora.data.dataset import RetrievalDataset
from advlora.errors import AdvloraError


@dataclass
class Batch:
    images: torch.Tensor      # (B,) image indices
    captions: torch.Tensor    # (B,) caption indices, caption i describes image i
    positives: torch.Tensor   # (B, B) bool: caption j is a positive of image i
    epoch: int
    index: int                # batch index within the epoch


class EpochSampler:
    """Batches of ``batch_size`` distinct images (the last incomplete batch of an epoch is dropped)."""

    def __init__(self, dataset: RetrievalDataset, batch_size: int, seed: int = 0) -> None:
        img2txt = dataset.img2txt
        self.usable = torch.tensor([i for i, c in enumerate(img2txt) if c], dtype=torch.long)
        if len(self.usable) < 2:
            raise AdvloraError(f"{dataset.name}: training needs at least 2 images with captions, "
                               f"found {len(self.usable)}")
        self.img2txt = img2txt
        self.batch_size = min(int(batch_size), len(self.usable))
        self.steps_per_epoch = len(self.usable) // self.batch_size
        self.seed = int(seed)
        text_ids: dict[str, int] = {}
        self.text_id = torch.tensor([text_ids.setdefault(c, len(text_ids)) for c in dataset.captions])
        groups: dict[frozenset, int] = {}
        self.group = torch.tensor([groups.setdefault(frozenset(self.text_id[c].item() for c in caps), len(groups))
                                   for caps in img2txt])
        self._plan: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of global step ``step`` (0-based)."""
        return divmod(int(step), self.steps_per_epoch)

    def _epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._plan is None or self._plan[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 1)
            order = self.usable[torch.randperm(len(self.usable), generator=g)]
            draw = torch.rand(len(order), generator=g)
            caps = torch.tensor([self.img2txt[i][int(r * len(self.img2txt[i]))] for i, r in
                                 zip(order.tolist(), draw.tolist())], dtype=torch.long)
            self._plan = (epoch, order, caps)
        return self._plan[1], self._plan[2]

    def batch(self, step: int) -> Batch:
        epoch, index = self.position(step)
        order, caps = self._epoch_plan(epoch)
        sl = slice(index * self.batch_size, (index + 1) * self.batch_size)
        images, captions = order[sl], caps[sl]
        return Batch(images, captions, self.positives(images, captions), epoch, index)

    def positives(self, images: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        same_group = self.group[images][:, None] == self.group[images][None, :]
        same_text = self.text_id[captions][:, None] == self.text_id[captions][None, :]
        return same_group | same_text | torch.eye(len(images), dtype=torch.bool)


__all__ = ["Batch", "EpochSampler"]
