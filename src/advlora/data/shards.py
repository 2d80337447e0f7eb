"""webdataset shards for large training sets: writing them from any annotation format, and reading them per rank.

A shard is a tar of samples ``<key>.<jpg|png|...>`` (the image file's bytes, as on disk) and ``<key>.txt`` (its
captions, one per line); ``sizes.json`` next to the shards maps each shard's file name to its sample count
(open_clip's convention). ``--data 'DIR/shard-{00000..00099}.tar'`` names them with brace expansion.

Reading (``ShardSamples``, an ``IterableDataset``): each epoch the shard list is permuted from (seed, epoch) and
dealt to the ``workers x ranks`` global readers ``g = rank * workers + worker``, each shard to the rank holding the
fewest samples so far and there to its worker holding the fewest (``exact`` mode: every sample exactly once per epoch
across all readers, so there must be at least ``workers x ranks`` shards), or each reader draws ``len // (R*W)``
samples' worth of shards with replacement from a generator seeded by (seed, epoch, g) (``resampled`` mode, for sets too
large for whole epochs). Either way the plan of an epoch, and so every reader's sample count, is known from
``sizes.json`` before a shard is opened: that is what lets the trainer give every rank the same number of steps and
resume mid-epoch (``advlora.training.data.ShardBatches``). Pixels are decoded and augmented in the worker, seeded from
(seed, epoch, sample position). What a resume means in each mode is in docs/benchmarks.md.
"""
from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import webdataset as wds
from braceexpand import braceexpand

from advlora.data.dataset import RetrievalDataset, load_image_uint8
from advlora.data.stream import Augment, Failed, sample_seed
from advlora.errors import AdvloraError, choices_error
from advlora.hashing import stable_hash
from advlora.io import atomic_dir, write_json
from advlora.progress import BatchProgress

SIZES_FILE = "sizes.json"
MODES = ("exact", "resampled")
#: image suffixes a shard member may carry (the file's own, lower case)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")


def is_shard_spec(spec: str) -> bool:
    """Whether a ``--data`` value names shards (a ``.tar`` path or brace pattern)."""
    return str(spec).endswith(".tar")


def write_shards(dataset: RetrievalDataset, out: str | Path, *, per_shard: int = 1000, prefix: str = "shard",
                 progress: str = "off") -> str:
    """Write ``dataset`` (an image set) as shards of ``per_shard`` samples into folder ``out`` (atomically).

    ``progress`` ("auto", "bar", "log" or "off"): a ``BatchProgress`` over the images written, with its ETA, so that
    sharding a large set shows where it is. Returns the brace pattern that names the shards, for ``--data``.
    """
    if dataset.kind != "image":
        raise AdvloraError(f"{dataset.name}: only image-text sets are written as shards "
                           f"(this is a {dataset.kind} set)")
    if isinstance(per_shard, bool) or int(per_shard) != per_shard or per_shard < 1:
        raise AdvloraError(f"--per-shard must be an integer >= 1, got {per_shard!r}")
    n_shards = max(1, math.ceil(len(dataset) / per_shard))
    width = max(5, len(str(n_shards - 1)))
    names = [f"{prefix}-{k:0{width}d}.tar" for k in range(n_shards)]
    img2txt = dataset.img2txt
    out = Path(out)
    sizes: dict[str, int] = {}
    bar = BatchProgress(f"writing {n_shards} shard{'s' * (n_shards != 1)}", len(dataset), mode=progress,
                        unit="image")
    try:
        with atomic_dir(out) as tmp:
            for k, name in enumerate(names):
                with open(tmp / name, "wb") as f, wds.TarWriter(f, encoder=False) as writer:
                    for i in range(k * per_shard, min(len(dataset), (k + 1) * per_shard)):
                        writer.write(_member(dataset, i, img2txt[i]))
                        bar.update()
                sizes[name] = min(len(dataset), (k + 1) * per_shard) - k * per_shard
            write_json(tmp / SIZES_FILE, sizes)
    finally:
        bar.close()
    return str(out / f"{prefix}-{{{0:0{width}d}..{n_shards - 1:0{width}d}}}.tar")


def _member(dataset: RetrievalDataset, i: int, caps: list[int]) -> dict:
    path = dataset.image_path(i)
    ext = path.suffix.lower().lstrip(".")
    ext = "jpg" if ext == "jpeg" else ext
    if ext not in IMAGE_EXTS:
        raise AdvloraError(f"{path}: cannot shard an image with suffix {path.suffix!r} ({', '.join(IMAGE_EXTS)})")
    try:
        data = path.read_bytes()
    except OSError:
        raise AdvloraError(f"{path}: image file is missing") from None
    text = "\n".join(dataset.captions[j].replace("\n", " ") for j in caps)
    return {"__key__": f"{i:09d}", ext: data, "txt": text.encode("utf-8")}


def expand(spec: str) -> list[Path]:
    """The shard files a brace pattern names (each must exist)."""
    paths = [Path(p) for p in braceexpand(str(spec))]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise AdvloraError(f"{missing[0]}: shard not found ({len(missing)} of {len(paths)} missing)")
    return paths


def shard_sizes(paths: list[Path]) -> list[int]:
    """Sample counts of the shards, from the ``sizes.json`` next to them."""
    found: dict[str, int] = {}
    for folder in {p.parent for p in paths}:
        f = folder / SIZES_FILE
        if not f.is_file():
            raise AdvloraError(f"{f}: missing (the shards' sample counts; `advlora data shard` writes it)")
        try:
            found.update({str(folder / k): int(v) for k, v in json.loads(f.read_text(encoding="utf-8")).items()})
        except (ValueError, AttributeError, TypeError):
            raise AdvloraError(f"{f}: not a JSON object of shard name -> sample count") from None
    missing = [p for p in paths if str(p) not in found]
    if missing:
        raise AdvloraError(f"{missing[0]}: not listed in {missing[0].parent / SIZES_FILE}")
    return [found[str(p)] for p in paths]


@dataclass
class ShardSample:
    pixels: torch.Tensor  # uint8 (3, S, S)
    captions: list[str]
    key: str


class ShardSamples(torch.utils.data.IterableDataset):
    """One rank's samples of one epoch, split over its DataLoader workers (see the module's docstring).

    Args:
        spec: a shard path or brace pattern.
        workers: DataLoader workers of each rank (0 counts as one: the rank's own process).
        augment: applied with a generator seeded from (seed, epoch, shard, position in the shard).
    """

    def __init__(self, spec: str, size: int, *, seed: int = 0, rank: int = 0, world: int = 1, workers: int = 0,
                 mode: str = "exact", augment: Augment | None = None) -> None:
        if mode not in MODES:
            raise choices_error("shard mode", mode, MODES)
        self.paths = expand(spec)
        self.sizes = shard_sizes(self.paths)
        self.size, self.seed, self.rank, self.world = int(size), int(seed), int(rank), int(world)
        self.workers, self.mode, self.augment = max(1, int(workers)), mode, augment
        self.epoch, self.skip = 0, None
        readers = self.workers * self.world
        if mode == "exact" and len(self.paths) < readers:
            raise AdvloraError(f"{spec}: {len(self.paths)} shard{'s' * (len(self.paths) != 1)} for {self.workers} "
                               f"worker{'s' * (self.workers != 1)} x {self.world} rank{'s' * (self.world != 1)} = "
                               f"{readers} readers: write at least {readers} shards (--per-shard smaller) or use "
                               f"fewer workers, or the resampled mode")

    def set_epoch(self, epoch: int, skip: list[int] | None = None) -> None:
        """Read ``epoch`` next; ``skip[w]``: samples worker ``w`` of this rank passes over before its first one
        (a resume mid-epoch: whole shards are skipped unopened, the rest without decoding)."""
        self.epoch = int(epoch)
        self.skip = list(skip) if skip is not None else None

    def __len__(self) -> int:
        return sum(self.sizes)

    @property
    def readers(self) -> int:
        return self.workers * self.world

    def plan(self, epoch: int) -> list[list[int]]:
        """For every global reader, the indices of the shards it reads in ``epoch``, in order."""
        readers = self.readers
        if self.mode == "exact":
            g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, 0))
            plan: list[list[int]] = [[] for _ in range(readers)]
            load, rank_load = [0] * readers, [0] * self.world
            for k in torch.randperm(len(self.paths), generator=g).tolist():
                # the least-loaded rank (ranks wait for each other every step), then its least-loaded worker
                rank = min(range(self.world), key=lambda j: (rank_load[j], j))
                r = min(range(rank * self.workers, (rank + 1) * self.workers), key=lambda j: (load[j], j))
                plan[r].append(k)
                load[r] += self.sizes[k]
                rank_load[rank] += self.sizes[k]
            return plan
        return [self._resampled(epoch, r) for r in range(readers)]

    def _resampled(self, epoch: int, reader: int) -> list[int]:
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, 1 + reader))
        want, picked, total = sum(self.sizes) // self.readers, [], 0
        while total < max(1, want):
            k = int(torch.randint(len(self.paths), (1,), generator=g))
            picked.append(k)
            total += self.sizes[k]
        return picked

    def shards_of(self, epoch: int, reader: int) -> list[int]:
        """Indices of the shards global reader ``reader`` reads in ``epoch``, in order."""
        return self.plan(epoch)[reader]

    def counts(self, epoch: int) -> list[int]:
        """Samples each global reader yields in ``epoch`` (from ``sizes.json``)."""
        return [sum(self.sizes[k] for k in shards) for shards in self.plan(epoch)]

    def __iter__(self) -> Iterator[ShardSample | Failed]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        skip = self.skip[worker] if self.skip is not None else 0
        for k in self.shards_of(self.epoch, self.rank * self.workers + worker):
            if skip >= self.sizes[k]:
                skip -= self.sizes[k]
                continue
            for item in self._read(k, skip):
                yield item
                if isinstance(item, Failed):
                    return
            skip = 0

    def first(self) -> ShardSample:
        """The first sample of the first shard, decoded (a check before work); a problem is ``AdvloraError``."""
        for item in self._read(0):
            if isinstance(item, Failed):
                raise AdvloraError(item.message)
            return item
        raise AdvloraError(f"{self.paths[0]}: shard holds no sample")

    def _read(self, k: int, skip: int = 0) -> Iterator[ShardSample | Failed]:
        path = self.paths[k]
        reader = wds.WebDataset([str(path)], shardshuffle=False, nodesplitter=None, workersplitter=None,
                                empty_check=False)
        try:
            for position, sample in enumerate(reader):
                if position >= skip:
                    yield self._sample(path, k, position, sample)
        except Exception as e:  # noqa: BLE001 - whatever the tar reader raised, the file is the cause
            yield Failed(f"{path}: not a readable tar shard ({type(e).__name__})")

    def _sample(self, path: Path, k: int, position: int, sample: dict) -> ShardSample | Failed:
        key = sample.get("__key__", "?")
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None:
            return Failed(f"{path}: sample {key} has no image member ({', '.join('.' + e for e in IMAGE_EXTS)})")
        if "txt" not in sample:
            return Failed(f"{path}: sample {key} has no caption member (.txt)")
        captions = [c.strip() for c in sample["txt"].decode("utf-8", "replace").splitlines() if c.strip()]
        if not captions:
            return Failed(f"{path}: sample {key} has an empty caption member")
        try:
            pixels = load_image_uint8(io.BytesIO(sample[ext]), self.size, name=f"{path}: sample {key}.{ext}")
        except AdvloraError as e:
            return Failed(str(e))
        if self.augment is not None:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, k * 1_000_000 + position))
            pixels = self.augment(pixels, g)
        return ShardSample(pixels, captions, key)


#: modulus of ``key_digest``: small enough that a sum over up to 256 ranks fits in int64
DIGEST_MOD = 2**55


def key_digest(keys) -> int:
    """An order-free digest of a multiset of sample keys: the sum of their hashes mod ``DIGEST_MOD``. Two
    epochs with the same count and digest visited the same samples (a drop and a duplicate would have to
    cancel exactly)."""
    return sum(stable_hash(str(k)) for k in keys) % DIGEST_MOD


__all__ = ["DIGEST_MOD", "MODES", "SIZES_FILE", "ShardSample", "ShardSamples", "expand",
           "is_shard_spec", "key_digest", "shard_sizes", "write_shards"]
