"""webdataset shards for large training sets: writing them from any annotation format, and reading them per rank.

A shard is a tar of samples ``<key>.<jpg|png|...>`` (the image file's bytes, as on disk) and ``<key>.txt`` (its
captions, one per line); ``sizes.json`` next to the shards maps each shard's file name to its sample count
(open_clip's convention). ``--data 'DIR/shard-{00000..00099}.tar'`` names them with brace expansion.

Reading (``ShardSamples``, an ``IterableDataset``): each epoch the shard list is permuted from (seed, epoch);
global worker ``g = rank * workers + worker`` reads shards ``g, g + R*W, ...`` of that order (``exact`` mode: every
sample exactly once per epoch across all ranks and workers, so there must be at least ``workers x ranks``
shards), or draws ``len // (R*W)`` samples' worth of shards with replacement from a generator seeded by
(seed, epoch, g) (``resampled`` mode, for sets too large for whole epochs). Pixels are decoded and augmented
in the worker, seeded from (seed, epoch, sample position). What a resume means in each mode is in
docs/benchmarks.md.
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
        self.epoch = 0
        readers = self.workers * self.world
        if mode == "exact" and len(self.paths) < readers:
            raise AdvloraError(f"{spec}: {len(self.paths)} shard{'s' * (len(self.paths) != 1)} for {self.workers} "
                               f"worker{'s' * (self.workers != 1)} x {self.world} rank{'s' * (self.world != 1)} = "
                               f"{readers} readers: write at least {readers} shards (--per-shard smaller) or use "
                               f"fewer workers, or the resampled mode")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return sum(self.sizes)

    def shards_of(self, epoch: int, reader: int) -> list[int]:
        """Indices of the shards global reader ``reader`` reads in ``epoch``, in order."""
        readers = self.workers * self.world
        if self.mode == "exact":
            g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, 0))
            order = torch.randperm(len(self.paths), generator=g).tolist()
            return order[reader::readers]
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, 1 + reader))
        want, picked, total = sum(self.sizes) // readers, [], 0
        while total < max(1, want):
            k = int(torch.randint(len(self.paths), (1,), generator=g))
            picked.append(k)
            total += self.sizes[k]
        return picked

    def __iter__(self) -> Iterator[ShardSample | Failed]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        for k in self.shards_of(self.epoch, self.rank * self.workers + worker):
            for item in self._read(k):
                yield item
                if isinstance(item, Failed):
                    return

    def first(self) -> ShardSample:
        """The first sample of the first shard, decoded (a check before work); a problem is ``AdvloraError``."""
        for item in self._read(0):
            if isinstance(item, Failed):
                raise AdvloraError(item.message)
            return item
        raise AdvloraError(f"{self.paths[0]}: shard holds no sample")

    def _read(self, k: int) -> Iterator[ShardSample | Failed]:
        path = self.paths[k]
        reader = wds.WebDataset([str(path)], shardshuffle=False, nodesplitter=None, workersplitter=None,
                                empty_check=False)
        try:
            for position, sample in enumerate(reader):
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


def collate_samples(items: list) -> dict | Failed:
    """Stack a batch of ``ShardSample``; the first ``Failed`` instead."""
    for item in items:
        if isinstance(item, Failed):
            return item
    return {"pixels": torch.stack([s.pixels for s in items]), "captions": [s.captions for s in items],
            "keys": [s.key for s in items]}


__all__ = ["MODES", "SIZES_FILE", "ShardSample", "ShardSamples", "collate_samples", "expand",
           "is_shard_spec", "shard_sizes", "write_shards"]
