"""``check_dataset``: every problem of an annotation file and its images or videos, listed, not the first only.

Problems: annotation records missing a key or with an empty caption (collected while reading, the bad record
skipped), paths outside the data root, images/videos that are missing or unreadable (images are decoded with
Pillow; videos opened with PyAV and their frames counted against the frames sampled), and duplicate files
(same content hash). Also reported: counts, and captions per image (min / mean / max).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from advlora.data.formats import detect_format, read_annotations
from advlora.data.records import collecting_problems
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

    A file that cannot be read as annotations at all (missing, not JSON, unknown format) is reported as one
    problem; per-record problems are all listed.
    """
    path = Path(path)
    report = CheckReport(str(path))
    try:
        report.fmt = fmt or detect_format(path) if path.is_file() else (fmt or "?")
        with collecting_problems() as problems:
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
