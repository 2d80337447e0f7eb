"""Training batches: a seeded sampler whose position is the global step, so that a resume is exact.

Each epoch is a seeded permutation of the training images, each image with one caption drawn for that epoch;
batch ``k`` of epoch ``e`` depends only on (seed, e, k). Positives in a batch: captions of the same image, of
an image with the same caption set (several renders of one emoji), or the same caption string.

``TrainBatches`` is the trainer's batch source: ``batch(step)`` is the sampler's batch with this rank's pixels
(its contiguous slice of the global batch), taken from an in-memory uint8 tensor (small sets) or decoded and
augmented in DataLoader workers that run ahead of the step (``LoaderConfig``). A batch is a function of
(seed, epoch, index) and the rank, so a resume at any step reads what an uninterrupted run would.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from advlora.data.dataset import RetrievalDataset
from advlora.data.shards import ShardSamples, collate_samples
from advlora.data.stream import STORAGE, Augment, ImageItems, collate, keep_in_memory, unwrap
from advlora.errors import AdvloraError, choices_error


@dataclass
class Batch:
    images: torch.Tensor      # (B,) image indices
    captions: torch.Tensor    # (B,) caption indices, caption i describes image i
    positives: torch.Tensor   # (B, B) bool: caption j is a positive of image i
    epoch: int
    index: int                # batch index within the epoch
    pixels: torch.Tensor | None = None  # this rank's uint8 pixels (b, [F,] 3, S, S), set by TrainBatches


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


@dataclass(frozen=True)
class LoaderConfig:
    """How training pixels are read.

    Attributes:
        storage: ``auto`` (in memory when the uint8 set fits ``IN_MEMORY_MAX_BYTES``), ``memory`` or ``stream``.
        workers: DataLoader worker processes decoding ahead of the step (streamed sets; None: up to 4, one core
            left to the step; 0: decode in the training process).
        augment: random resized crop and flip (``advlora.data.stream.Augment``); None: on for data sets on
            disk, off for the embedded ones (their renders are the augmentation).
        prefetch: batches each worker decodes ahead.
    """

    storage: str = "auto"
    workers: int | None = None
    augment: bool | None = None
    prefetch: int = 2

    def __post_init__(self) -> None:
        if self.storage not in STORAGE:
            raise choices_error("data storage", self.storage, STORAGE)
        if self.workers is not None and (isinstance(self.workers, bool) or int(self.workers) != self.workers
                                         or self.workers < 0):
            raise AdvloraError(f"data workers must be an integer >= 0, got {self.workers!r}")
        if isinstance(self.prefetch, bool) or int(self.prefetch) != self.prefetch or self.prefetch < 1:
            raise AdvloraError(f"data prefetch must be an integer >= 1, got {self.prefetch!r}")

    def worker_count(self) -> int:
        if self.workers is not None:
            return int(self.workers)
        return max(0, min(4, (os.cpu_count() or 1) - 1))


def worker_context():
    """Workers are forked on Linux, whatever start method the calling process was started with: they start in
    milliseconds (a spawned worker imports torch again) and inherit the data set without pickling it."""
    return mp.get_context("fork") if sys.platform.startswith("linux") else None


def wants_augmentation(dataset: RetrievalDataset, config: LoaderConfig) -> bool:
    """``config.augment``, or by default: on for data on disk, off for the embedded sets."""
    return bool(config.augment) if config.augment is not None else not dataset.meta.get("embedded", False)


class TrainBatches:
    """The trainer's batches with this rank's pixels; streamed sets are decoded in DataLoader workers.

    Args:
        rank, world: this process and the number of processes; the global batch is split in ``world``
            contiguous slices (``training.step.Dist.local``): no sample is duplicated or dropped.
        pin_memory: pin the decoded batches (for a CUDA device).
    """

    def __init__(self, dataset: RetrievalDataset, sampler: EpochSampler, size: int, *, rank: int = 0,
                 world: int = 1, config: LoaderConfig | None = None, pin_memory: bool = False) -> None:
        self.config = config or LoaderConfig()
        self.sampler, self.rank, self.world = sampler, int(rank), int(world)
        if sampler.batch_size % self.world:
            raise AdvloraError(f"train.batch_size {sampler.batch_size} is not divisible by the {self.world} processes")
        self.in_memory = keep_in_memory(dataset, size, self.config.storage)
        memory = dataset.load_images_uint8(size) if self.in_memory else None
        augment = Augment() if wants_augmentation(dataset, self.config) else None
        self.items = ImageItems(dataset, size, augment=augment, seed=sampler.seed, memory=memory)
        self.workers = 0 if self.in_memory else self.config.worker_count()
        self.pin_memory = pin_memory
        self._iter: Iterator | None = None
        self._next_step = -1
        self._stop = -1

    def local_keys(self, step: int) -> list[tuple[int, int]]:
        """(image index, epoch) of this rank's samples of global step ``step``."""
        b = self.sampler.batch(step)
        per = len(b.images) // self.world
        return [(int(i), b.epoch) for i in b.images[self.rank * per:(self.rank + 1) * per]]

    def batch(self, step: int) -> Batch:
        """The sampler's batch of ``step`` with ``pixels``: this rank's uint8 images."""
        b = self.sampler.batch(step)
        if self.in_memory and self.items.augment is None:
            per = len(b.images) // self.world
            b.pixels = self.items.memory[b.images[self.rank * per:(self.rank + 1) * per]]
            return b
        if self.workers == 0:
            b.pixels = unwrap(collate([self.items[k] for k in self.local_keys(step)]))
            return b
        if self._iter is None or step != self._next_step:
            self._start(step)
        try:
            b.pixels = unwrap(next(self._iter))
        except RuntimeError as e:  # a worker killed (out of memory, a signal): one line, the cause
            raise AdvloraError(f"a data loading worker died: {str(e).splitlines()[0]}") from None
        self._next_step = step + 1
        return b

    def _start(self, step: int, horizon: int = 1 << 20) -> None:
        """(Re)start the workers at ``step``: they decode steps ``step, step + 1, ...`` ahead of the trainer."""
        self.close()
        keys = _StepKeys(self, step, step + horizon)
        self._loader = torch.utils.data.DataLoader(self.items, batch_sampler=keys, num_workers=self.workers,
                                                   collate_fn=collate, pin_memory=self.pin_memory,
                                                   prefetch_factor=self.config.prefetch, persistent_workers=False,
                                                   multiprocessing_context=worker_context())
        self._iter = iter(self._loader)
        self._next_step = step

    def close(self) -> None:
        """Stop the workers (also at garbage collection)."""
        it, self._iter = self._iter, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()


class _StepKeys:
    """Batch sampler over global steps: the keys of this rank's samples of each step, in step order."""

    def __init__(self, source: TrainBatches, start: int, stop: int) -> None:
        self.source, self.start, self.stop = source, start, stop

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.source.local_keys(step)

    def __len__(self) -> int:
        return self.stop - self.start


class ShardBatches:
    """One rank's training batches from webdataset shards, epoch by epoch (``advlora.data.shards``).

    Each batch is a dict: ``pixels`` (b, 3, S, S) uint8, ``captions`` (a list of caption lists), ``keys``. In
    ``exact`` mode an epoch yields every sample of the rank's shards once (a worker's last batch may be short);
    in ``resampled`` mode each reader yields about ``len / (workers x ranks)`` samples drawn by shard.
    """

    def __init__(self, spec: str, size: int, batch_size: int, *, seed: int = 0, rank: int = 0, world: int = 1,
                 config: LoaderConfig | None = None, mode: str = "exact", pin_memory: bool = False) -> None:
        self.config = config or LoaderConfig()
        if int(batch_size) % int(world):
            raise AdvloraError(f"train.batch_size {batch_size} is not divisible by the {world} processes")
        self.local_batch = int(batch_size) // int(world)
        self.workers = self.config.worker_count()
        augment = Augment() if self.config.augment is not False else None
        self.samples = ShardSamples(spec, size, seed=seed, rank=rank, world=world, workers=self.workers, mode=mode,
                                    augment=augment)
        self.pin_memory = pin_memory

    def epoch(self, epoch: int) -> Iterator[dict]:
        """The batches of ``epoch`` for this rank, decoded in its DataLoader workers."""
        self.samples.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(self.samples, batch_size=self.local_batch, num_workers=self.workers,
                                             collate_fn=collate_samples, pin_memory=self.pin_memory,
                                             prefetch_factor=self.config.prefetch if self.workers else None,
                                             multiprocessing_context=worker_context() if self.workers else None)
        for batch in loader:
            yield unwrap(batch)


__all__ = ["Batch", "EpochSampler", "LoaderConfig", "ShardBatches", "TrainBatches", "wants_augmentation"]
