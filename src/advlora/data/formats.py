"""Annotation formats, read into ``RetrievalDataset``.

``FORMATS`` maps a format name to a reader ``(path, split) -> RetrievalDataset``; ``detect_format`` picks
one from the file's name and content. The project's generic format is JSON lines (or a JSON list) of
``{"image": <path relative to the annotation file>, "captions": [...]}`` (``caption`` also accepted, as a
string or a list), or a CSV with columns ``image`` and ``caption`` / ``captions``.
"""
from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path

import torch

from advlora.data.dataset import RetrievalDataset
from advlora.errors import AdvloraError, choices_error

Reader = Callable[..., RetrievalDataset]  # (path, split, image_root=None) -> RetrievalDataset

#: when set (by ``collecting_problems``), readers append per-record problems here instead of raising
_PROBLEMS: ContextVar[list[str] | None] = ContextVar("advlora_annotation_problems", default=None)


@contextlib.contextmanager
def collecting_problems() -> Iterator[list[str]]:
    """Within the block, per-record problems are collected (bad records skipped) instead of raised."""
    sink: list[str] = []
    token = _PROBLEMS.set(sink)
    try:
        yield sink
    finally:
        _PROBLEMS.reset(token)


def problem(message: str) -> None:
    """Raise ``AdvloraError(message)``, or record it when ``collecting_problems`` is active."""
    sink = _PROBLEMS.get()
    if sink is None:
        raise AdvloraError(message)
    sink.append(message)


def records_to_dataset(records: Iterable[tuple[str, list[str]]], root: Path, name: str, source: Path,
                       merge_duplicates: bool = True) -> RetrievalDataset:
    """Group (image, captions) records by image (first-seen order), validating paths and captions."""
    order: dict[str, int] = {}
    images: list[str] = []
    captions: list[str] = []
    txt2img: list[int] = []
    root_resolved = root.resolve()
    for n, rec in enumerate(records):
        if rec is None:  # a record already reported as a problem
            continue
        image, caps = rec
        if not isinstance(image, str) or not image:
            problem(f"{source}: record {n + 1} has no image or video path")
            continue
        p = (root / image).resolve()
        if not p.is_relative_to(root_resolved):
            problem(f"{source}: record {n + 1}: path {image!r} is outside the data root {root}")
            continue
        if isinstance(caps, str):
            caps = [caps]
        if not caps or not isinstance(caps, list):
            problem(f"{source}: record {n + 1} ({image}) has no caption")
            continue
        good = [c.strip() for c in caps if isinstance(c, str) and c.strip()]
        if len(good) < len(caps):
            problem(f"{source}: record {n + 1} ({image}) has an empty caption")
            if not good:
                continue
        key = image if merge_duplicates else f"{image}#{n}"
        if key not in order:
            order[key] = len(images)
            images.append(image)
        for c in good:
            captions.append(c)
            txt2img.append(order[key])
    if not images:
        raise AdvloraError(f"{source}: no image-text pairs found")
    return RetrievalDataset(root, images, captions, torch.tensor(txt2img, dtype=torch.long), name=name)


def _record_captions(rec: dict, source: Path, n: int) -> tuple[str, list[str]] | None:
    if not isinstance(rec, dict) or "image" not in rec:
        return problem(f"{source}: record {n + 1} is missing the key 'image'")
    caps = rec.get("captions", rec.get("caption"))
    if caps is None:
        return problem(f"{source}: record {n + 1} is missing the key 'captions' (or 'caption')")
    return rec["image"], caps


def image_root_of(path: Path, image_root: str | Path | None) -> Path:
    """Where the paths in an annotation file are relative to: ``image_root``, default the file's folder."""
    if image_root is None:
        return path.parent
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise AdvloraError(f"--image-root {root}: no such folder")
    return root


def read_json_lines(path: Path) -> list:
    """The objects of a JSON-lines file (a line that is not JSON is a problem, then skipped)."""
    out = []
    for n, line in enumerate(_read_text(path).splitlines()):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                problem(f"{path}: line {n + 1} is not valid JSON ({e.msg})")
    return out


def read_jsonl(path: Path, split: str | None = None, image_root: str | Path | None = None) -> RetrievalDataset:
    """Generic JSON lines: one ``{"image", "captions"}`` object per line."""
    recs = [_record_captions(r, path, n) for n, r in enumerate(read_json_lines(path))]
    return records_to_dataset(recs, image_root_of(path, image_root), path.stem, path)


def read_json_list(path: Path, split: str | None = None, image_root: str | Path | None = None
                   ) -> RetrievalDataset:
    """A JSON list of ``{"image", "caption"|"captions"}`` objects (also the BLIP / ALBEF / LAVIS files).

    Records naming the same image merge (LAVIS train files hold one caption per record).
    """
    data = _load_json(path)
    if not isinstance(data, list):
        raise AdvloraError(f"{path}: expected a JSON list of {{'image', 'caption'}} records")
    recs = [_record_captions(r, path, n) for n, r in enumerate(data)]
    return records_to_dataset(recs, image_root_of(path, image_root), path.stem, path)


def read_csv(path: Path, split: str | None = None, image_root: str | Path | None = None) -> RetrievalDataset:
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
    return records_to_dataset(recs, image_root_of(path, image_root), path.stem, path)


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
    """Pick a reader from the file name and content (the first 64 kB: big files are not parsed twice)."""
    suffix = path.suffix.lower()
    from advlora.data.standard import detect_standard  # the benchmark formats (registered below)

    found = detect_standard(path)
    if found is not None:
        return found
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "json"
    raise AdvloraError(f"{path}: cannot tell the annotation format; name it with --format "
                       f"({', '.join(sorted(FORMATS))})")


def read_annotations(path: str | Path, fmt: str | None = None, split: str | None = None,
                     image_root: str | Path | None = None) -> RetrievalDataset:
    """Read an annotation file; ``image_root``: the folder its image/video paths are relative to."""
    path = Path(path)
    if not path.exists():
        raise AdvloraError(f"{path}: annotation file not found")
    if path.is_dir():
        raise AdvloraError(f"{path}: is a folder; name the annotation file inside it")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise choices_error("annotation format", fmt, FORMATS)
    if image_root is None:
        return FORMATS[fmt](path, split)
    return FORMATS[fmt](path, split, image_root=image_root)


def _register_standard_formats() -> None:
    from advlora.data.standard import STANDARD_FORMATS
    from advlora.data.video import VIDEO_FORMATS

    FORMATS.update(STANDARD_FORMATS)
    FORMATS.update(VIDEO_FORMATS)


_register_standard_formats()
