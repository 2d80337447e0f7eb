"""``check_dataset``: every problem of an annotation file and its images or videos, listed, not the first only;
``check_inputs``: what a command needs, checked before its first step (the first problem, as one line).

Problems: annotation records missing a key or with an empty caption (collected while reading, the bad record
skipped), paths outside the data root, images/videos that are missing or unreadable (images are decoded with
Pillow; videos opened with PyAV and their frames counted against the frames sampled), and duplicate files
(same content hash). Also reported: counts, and captions per image (min / mean / max).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from advlora.data import EMBEDDED, load_dataset
from advlora.data.dataset import RetrievalDataset
from advlora.data.formats import detect_format, read_annotations
from advlora.data.records import collecting_problems
from advlora.data.shards import ShardSamples, is_shard_spec
from advlora.data.video import frame_count
from advlora.errors import AdvloraError


@dataclass
class CheckReport:
    path: str
    fmt: str = "?"
    kind: str = "image"
    n_items: int = 0
    n_captions: int = 0
    captions_per_item: tuple[int, float, int] = (0, 0.0, 0)
    annotation_problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Every problem as one line."""
        out = list(self.annotation_problems)
        out += [f"{p}: {self.kind} file is missing" for p in self.missing]
        out += list(self.unreadable)
        out += [f"duplicate {self.kind}s (same content): {', '.join(g)}" for g in self.duplicates]
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        lo, mean, hi = self.captions_per_item
        out = [f"{self.path} (format {self.fmt}): {self.n_items} {self.kind}s, {self.n_captions} captions; "
               f"captions per {self.kind} min {lo} / mean {mean:.2f} / max {hi}",
               f"missing {len(self.missing)}, unreadable {len(self.unreadable)}, duplicate groups "
               f"{len(self.duplicates)}, annotation problems {len(self.annotation_problems)}"]
        out += [f"note: {n}" for n in self.notes]
        probs = self.problems
        out += [f"problem: {p}" for p in probs]
        out.append("ok" if not probs else f"{len(probs)} problem{'s' * (len(probs) != 1)}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def check_dataset(path: str | Path, fmt: str | None = None, split: str | None = None,
                  image_root: str | Path | None = None, frames: int | None = None) -> CheckReport:
    """Check an annotation file and the files it names; ``report.ok`` only when nothing is wrong.

    ``path`` is an annotation file, a folder, or an embedded set's name (``emoji-cls``: as ``--data`` takes it,
    built on first use). A file that cannot be read as annotations (not JSON, unknown format) is reported as one
    problem; per-record problems are all listed. A path that does not exist and is no embedded set's name is bad
    input: ``AdvloraError`` (exit status 2), as for every other command.
    """
    report = CheckReport(str(path))
    embedded = str(path) in EMBEDDED
    path = Path(path)
    if not embedded and not path.exists():
        raise AdvloraError(f"{path}: no such file and not an embedded data set ({', '.join(EMBEDDED)})")
    try:
        with collecting_problems() as problems:
            if embedded:
                ds = load_dataset(str(path), split or "test", frames=frames)
                report.fmt = f"embedded, split {split or 'test'}"
            else:
                report.fmt = fmt or detect_format(path) if path.is_file() else (fmt or "?")
                ds = read_annotations(path, fmt, split, image_root=image_root)
    except AdvloraError as e:
        report.annotation_problems.append(str(e))
        return report
    report.annotation_problems += problems
    report.kind = ds.kind
    if frames is not None and ds.kind == "video":
        ds.frames = frames
    report.n_items, report.n_captions = len(ds), len(ds.captions)
    per = [len(c) for c in ds.img2txt]
    report.captions_per_item = (min(per), sum(per) / len(per), max(per)) if per else (0, 0.0, 0)
    if ds.meta.get("captions_dropped"):
        report.notes.append(f"{ds.meta['captions_dropped']} captions beyond the first 5 per image not used "
                            "(the standard test protocol)")
    by_hash: dict[str, list[str]] = {}
    for i in range(len(ds)):
        p = ds.image_path(i)
        if not p.is_file():
            report.missing.append(str(p))
            continue
        error = _readable(p, ds)
        if error:
            report.unreadable.append(error)
        by_hash.setdefault(_hash(p), []).append(str(p))
    report.duplicates = [g for g in by_hash.values() if len(g) > 1]
    return report


def _readable(p: Path, ds) -> str | None:
    """None when the file decodes, else one line naming it and the problem."""
    if ds.kind == "video":
        try:
            n = frame_count(p)
        except AdvloraError as e:
            return str(e)
        return None if n >= ds.frames else f"{p}: video has {n} frames, fewer than the {ds.frames} sampled"
    from PIL import Image

    try:
        with Image.open(p) as im:
            im.load()
    except Exception as e:  # noqa: BLE001 - any decoder failure means unreadable
        return f"{p}: cannot read image ({type(e).__name__})"
    return None


def _hash(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_inputs(spec: str, splits: list[str] | tuple[str, ...], *, fmt: str | None = None,
                 image_root: str | None = None, frames: int | None = None, size: int = 32
                 ) -> dict[str, RetrievalDataset | None]:
    """Check, before any work, every split, root and file a command will read; raise the first problem.

    For each split of ``spec`` (an embedded set, an annotation file or a shard pattern): the annotation file
    and the split exist, the image root exists, every image or video file exists, and one sample decodes at
    ``size``. Shards: every shard and ``sizes.json`` exist and the first sample of the first shard decodes.
    Returns split -> the data set read (None for shards), so that the caller does not read it twice.
    Raises ``AdvloraError``: one line naming the split and the file or cause.
    """
    if is_shard_spec(spec):
        ShardSamples(spec, size).first()
        return {split: None for split in splits}
    out: dict[str, RetrievalDataset | None] = {}
    for split in dict.fromkeys(splits):
        try:
            ds = load_dataset(spec, split, fmt=fmt, image_root=image_root, frames=frames)
        except AdvloraError as e:
            raise AdvloraError(f"split {split!r}: {e}") from None
        missing = [p for p in (ds.image_path(i) for i in range(len(ds))) if not p.is_file()]
        if missing:
            raise AdvloraError(f"split {split!r}: {len(missing)} of {len(ds)} {ds.kind} files are missing, "
                               f"the first: {missing[0]}")
        try:
            ds.load_item(0, size)
        except AdvloraError as e:
            raise AdvloraError(f"split {split!r}: {e}") from None
        out[split] = ds
    return out
