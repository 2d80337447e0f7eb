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
from advlora.data.shards import ShardSamples
from advlora.data.stream import STORAGE, Augment, Failed, ImageItems, collate, keep_in_memory, sample_seed, unwrap
from advlora.errors import AdvloraError, choices_error
from advlora.hashing import stable_hash


@dataclass
class Batch:
    images: torch.Tensor      # (B,) image indices
    captions: torch.Tensor    # (B,) caption indices, caption i describes image i
    positives: torch.Tensor   # (B, B) bool: caption j is a positive of image i
    epoch: int
    index: int                # batch index within the epoch
    pixels: torch.Tensor | None = None  # this rank's uint8 pixels (b, [F,] 3, S, S), set by TrainBatches
    texts: list[str] | None = None      # this rank's caption strings
    valid: torch.Tensor | None = None   # (b,) bool: this rank's real rows (shards: False for padding)
    text_ids: torch.Tensor | None = None   # (b,) this rank's caption ids; with group_ids: positives across ranks
    group_ids: torch.Tensor | None = None  # (b,) ids of this rank's samples' caption sets
    keys: list[str] | None = None       # shards: the keys of this rank's real samples


class EpochSampler:
    """Batches of ``batch_size`` distinct images (the last incomplete batch of an epoch is dropped).

    ``captions=False`` (objectives that read images alone): every image is used, no caption is drawn, a
    batch's ``captions`` are -1 and its positives the diagonal.
    """

    def __init__(self, dataset: RetrievalDataset, batch_size: int, seed: int = 0, captions: bool = True) -> None:
        img2txt = dataset.img2txt
        self.captions = bool(captions)
        self.usable = torch.tensor([i for i, c in enumerate(img2txt) if c or not self.captions], dtype=torch.long)
        if len(self.usable) < 2:
            what = "images with captions" if self.captions else "images"
            raise AdvloraError(f"{dataset.name}: training needs at least 2 {what}, found {len(self.usable)}")
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

    def epoch_steps(self, epoch: int) -> int:
        """Steps of ``epoch`` (the same for every epoch)."""
        return self.steps_per_epoch

    def total_steps(self, epochs: int) -> int:
        return int(epochs) * self.steps_per_epoch

    def _epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._plan is None or self._plan[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 1)
            order = self.usable[torch.randperm(len(self.usable), generator=g)]
            if not self.captions:
                self._plan = (epoch, order, torch.full_like(order, -1))
                return order, self._plan[2]
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
        if not self.captions:
            return torch.eye(len(images), dtype=torch.bool)
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
        self.captions = dataset.captions
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
        """The sampler's batch of ``step`` with ``pixels`` and ``texts``: this rank's uint8 images and captions."""
        b = self.sampler.batch(step)
        per = len(b.captions) // self.world
        if self.sampler.captions:
            b.texts = [self.captions[j] for j in b.captions[self.rank * per:(self.rank + 1) * per].tolist()]
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
    """One rank's training batches from webdataset shards (``advlora.data.shards``), with the trainer's interface.

    The rank's samples of an epoch are its readers' (DataLoader workers') streams, interleaved round-robin in
    worker order (the DataLoader's order); step ``k`` of the epoch takes samples ``[k * b, (k + 1) * b)`` of that
    sequence (``b``: the per-rank batch). Every rank gets the same number of steps in an epoch, the most any
    rank needs; a rank with fewer samples fills its last steps with padding rows (``Batch.valid`` False, left out
    of the loss). In ``exact`` mode an epoch is then every sample of the shards exactly once across all ranks and
    workers, whatever the shard sizes. Each sample's caption for an epoch is drawn from (seed, epoch, key).
    Because every reader's sample count is known from ``sizes.json`` before a shard is opened, a resume at any
    step skips what was read without decoding it and reads what an uninterrupted run would.
    """

    def __init__(self, spec: str, size: int, batch_size: int, *, seed: int = 0, rank: int = 0, world: int = 1,
                 config: LoaderConfig | None = None, mode: str = "exact", pin_memory: bool = False) -> None:
        self.config = config or LoaderConfig()
        if int(batch_size) % int(world):
            raise AdvloraError(f"train.batch_size {batch_size} is not divisible by the {world} processes")
        self.batch_size, self.seed, self.rank, self.world = int(batch_size), int(seed), int(rank), int(world)
        self.local_batch = self.batch_size // self.world
        self.workers = self.config.worker_count()
        augment = Augment() if self.config.augment is not False else None
        self.samples = ShardSamples(spec, size, seed=seed, rank=rank, world=world, workers=self.workers, mode=mode,
                                    augment=augment)
        self.size = int(size)
        self.pin_memory = pin_memory
        self._steps: dict[int, int] = {}
        self._it: Iterator | None = None
        self._at: tuple[int, int] = (-1, -1)
        self._loader = None

    # ---- the schedule: the same on every rank, from sizes.json ---------------------------------------------
    def _rank_counts(self, epoch: int, rank: int) -> list[int]:
        w = self.samples.workers
        return self.samples.counts(epoch)[rank * w:(rank + 1) * w]

    def epoch_steps(self, epoch: int) -> int:
        """Steps of ``epoch``: the most any rank needs for its samples."""
        if epoch not in self._steps:
            need = [-(-sum(self._rank_counts(epoch, r)) // self.local_batch) for r in range(self.world)]
            self._steps[epoch] = max(1, max(need))
        return self._steps[epoch]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, step within the epoch) of global step ``step`` (0-based)."""
        epoch, step = 0, int(step)
        while step >= self.epoch_steps(epoch):
            step -= self.epoch_steps(epoch)
            epoch += 1
        return epoch, step

    def total_steps(self, epochs: int) -> int:
        return sum(self.epoch_steps(e) for e in range(int(epochs)))

    # ---- batches --------------------------------------------------------------------------------------------
    def batch(self, step: int) -> Batch:
        """Step ``step``'s batch for this rank: ``pixels`` (b, 3, S, S) uint8, ``texts``, ``valid``, the caption
        and caption-set ids the trainer gathers into the global positives, and the sample ``keys``."""
        epoch, index = self.position(step)
        if self._it is None or self._at != (epoch, index):
            self._start(epoch, index)
        rows = []
        for _ in range(self.local_batch):
            item = next(self._it, None)
            if item is None:
                break
            rows.append(item)
        self._at = (epoch, index + 1)
        return self._collate(rows, epoch, index)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Every step's batch of ``epoch`` for this rank, in order."""
        first = self.total_steps(epoch)
        for k in range(self.epoch_steps(epoch)):
            yield self.batch(first + k)

    def _start(self, epoch: int, index: int) -> None:
        """Read the rank's sequence of ``epoch`` from sample ``index * b``: each worker skips its share of the
        samples before the last full round of the round-robin at or below that point, unopened or undecoded;
        the few samples after it are read and dropped."""
        self.close()
        counts = self._rank_counts(epoch, self.rank)
        skip, extra = _round_robin_skip(counts, index * self.local_batch)
        self.samples.set_epoch(epoch, skip)
        if self.workers == 0:
            it = iter(self.samples)
        else:
            self._loader = torch.utils.data.DataLoader(
                self.samples, batch_size=None, num_workers=self.workers, collate_fn=_as_is,
                prefetch_factor=self.config.prefetch * self.local_batch,
                multiprocessing_context=worker_context())
            it = iter(self._loader)
        for _ in range(extra):
            if isinstance(next(it, None), Failed):
                break
        self._it = it

    def _collate(self, rows: list, epoch: int, index: int) -> Batch:
        for item in rows:
            if isinstance(item, Failed):
                raise AdvloraError(item.message)
        b, n = self.local_batch, len(rows)
        pixels = torch.zeros(b, 3, self.size, self.size, dtype=torch.uint8)
        if n:
            pixels[:n] = torch.stack([r.pixels for r in rows])
        if self.pin_memory:   # the batch is assembled here, not by the DataLoader (which pins only tensors it sees)
            pixels = pixels.pin_memory()
        texts, text_ids, group_ids = [], [], []
        for r in rows:
            caption = r.captions[sample_seed(self.seed, epoch, stable_hash(r.key)) % len(r.captions)]
            texts.append(caption)
            text_ids.append(stable_hash(caption))
            group_ids.append(stable_hash("\n".join(sorted(set(r.captions)))))
        pad = [-(1 + self.rank * b + i) for i in range(n, b)]     # negative: never equal to a hash or each other
        valid = torch.zeros(b, dtype=torch.bool)
        valid[:n] = True
        return Batch(images=torch.full((b,), -1), captions=torch.full((b,), -1), positives=None, epoch=epoch,
                     index=index, pixels=pixels, texts=texts + [""] * (b - n), valid=valid,
                     text_ids=torch.tensor(text_ids + pad, dtype=torch.long),
                     group_ids=torch.tensor(group_ids + pad, dtype=torch.long), keys=[r.key for r in rows])

    def close(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self._loader = None


def _as_is(item):
    """The DataLoader's collate for single samples: the sample as the worker made it."""
    return item


def _round_robin_skip(counts: list[int], start: int) -> tuple[list[int], int]:
    """For streams of ``counts`` items interleaved round-robin (exhausted streams skipped), the items each
    stream holds before the last complete round at or below item ``start``, and how many items lie between
    that round's end and ``start``."""
    taken, done = [0] * len(counts), 0
    while True:
        active = [w for w, c in enumerate(counts) if taken[w] < c]
        if not active:
            return taken, start - done
        full = min(counts[w] - taken[w] for w in active)
        rounds = min(full, (start - done) // len(active))
        for w in active:
            taken[w] += rounds
        done += rounds * len(active)
        if rounds < full:
            return taken, start - done


__all__ = ["Batch", "EpochSampler", "LoaderConfig", "ShardBatches", "TrainBatches", "wants_augmentation"]
