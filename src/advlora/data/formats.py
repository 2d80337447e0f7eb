"""Annotation formats, read into ``RetrievalDataset``.

``FORMATS`` maps a format name to a reader ``(path, split) -> RetrievalDataset``; ``detect_format`` picks
one from the file's name and content. The project's generic format is JSON lines (or a JSON list) of
``{"image": <path relative to the annotation file>, "captions": [...]}`` (``caption`` also accepted, as a
string or a list), or a CSV with columns ``image`` and ``caption`` / ``captions``.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from advlora.data.dataset import RetrievalDataset
from advlora.errors import AdvloraError, choices_error

Reader = Callable[[Path, "str | None"], RetrievalDataset]


def records_to_dataset(records: Iterable[tuple[str, list[str]]], root: Path, name: str, source: Path,
                       merge_duplicates: bool = True) -> RetrievalDataset:
    """Group (image, captions) records by image (first-seen order), validating paths and captions."""
    order: dict[str, int] = {}
    images: list[str] = []
    captions: list[str] = []
    txt2img: list[int] = []
    root_resolved = root.resolve()
    for n, (image, caps) in enumerate(records):
        if not isinstance(image, str) or not image:
            raise AdvloraError(f"{source}: record {n + 1} has no image path")
        p = (root / image).resolve()
        if not p.is_relative_to(root_resolved):
            raise AdvloraError(f"{source}: record {n + 1}: image path {image!r} is outside the data root {root}")
        if isinstance(caps, str):
            caps = [caps]
        if not caps:
            raise AdvloraError(f"{source}: record {n + 1} ({image}) has no caption")
        key = image if merge_duplicates else f"{image}#{n}"
        if key not in order:
            order[key] = len(images)
            images.append(image)
        for c in caps:
            if not isinstance(c, str) or not c.strip():
                raise AdvloraError(f"{source}: record {n + 1} ({image}) has an empty caption")
            captions.append(c.strip())
            txt2img.append(order[key])
    if not images:
        raise AdvloraError(f"{source}: no image-text pairs found")
    return RetrievalDataset(root, images, captions, torch.tensor(txt2img, dtype=torch.long), name=name)


def _record_captions(rec: dict, source: Path, n: int) -> tuple[str, list[str]]:
    if not isinstance(rec, dict) or "image" not in rec:
        raise AdvloraError(f"{source}: record {n + 1} is missing the key 'image'")
    caps = rec.get("captions", rec.get("caption"))
    if caps is None:
        raise AdvloraError(f"{source}: record {n + 1} is missing the key 'captions' (or 'caption')")
    return rec["image"], caps


def read_jsonl(path: Path, split: str | None = None) -> RetrievalDataset:
    """Generic JSON lines: one ``{"image", "captions"}`` object per line."""
    recs = []
    for n, line in enumerate(_read_text(path).splitlines()):
        if line.strip():
            try:
                recs.append(_record_captions(json.loads(line), path, len(recs)))
            except json.JSONDecodeError as e:
                raise AdvloraError(f"{path}: line {n + 1} is not valid JSON ({e.msg})") from None
    return records_to_dataset(recs, path.parent, path.stem, path)


def read_json_list(path: Path, split: str | None = None) -> RetrievalDataset:
    """A JSON list of ``{"image", "caption"|"captions"}`` objects (also the BLIP / ALBEF / LAVIS files)."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise AdvloraError(f"{path}: expected a JSON list of {{'image', 'caption'}} records")
    recs = [_record_captions(r, path, n) for n, r in enumerate(data)]
    return records_to_dataset(recs, path.parent, path.stem, path)


def read_csv(path: Path, split: str | None = None) -> RetrievalDataset:
    """CSV with a header: ``image`` and ``caption`` (one row per pair) or ``captions`` (``|``-separated)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise AdvloraError(f"{path}: CSV file has no rows")
    cols = set(rows[0])
    if "image" not in cols or not ({"caption", "captions"} & cols):
        raise AdvloraError(f"{path}: CSV needs columns 'image' and 'caption' or 'captions' (found {sorted(cols)})")
    recs = []
    for r in rows:
        caps = r.get("captions")
        recs.append((r["image"], caps.split("|") if caps is not None else [r.get("caption") or ""]))
    return records_to_dataset(recs, path.parent, path.stem, path)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AdvloraError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AdvloraError(f"{path}: cannot read annotation file ({type(e).__name__})") from None


def _load_json(path: Path):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise AdvloraError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


FORMATS: dict[str, Reader] = {
    "jsonl": read_jsonl,
    "json": read_json_list,
    "csv": read_csv,
}


def detect_format(path: Path) -> str:
    """Pick a reader from the file name and content."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "json"
    raise AdvloraError(f"{path}: cannot tell the annotation format; name it with --format "
                       f"({', '.join(sorted(FORMATS))})")


def read_annotations(path: str | Path, fmt: str | None = None, split: str | None = None) -> RetrievalDataset:
    path = Path(path)
    if not path.exists():
        raise AdvloraError(f"{path}: annotation file not found")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise choices_error("annotation format", fmt, FORMATS)
    return FORMATS[fmt](path, split)
