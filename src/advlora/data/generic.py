"""The project's generic annotation formats, recognised by the file's suffix alone.

- ``jsonl``: JSON lines of ``{"image": <path relative to the annotation file>, "captions": [...]}``
  (``caption`` also accepted, as a string or a list).
- ``json``: a JSON list of the same records (also the BLIP / ALBEF / LAVIS files); records naming the same
  image merge.
- ``csv``: a header with ``image`` and ``caption`` (one row per pair) or ``captions`` (``|``-separated).

Their detectors accept any file with the suffix, so ``advlora.data.formats`` tries them after the formats
that look at content.
"""
from __future__ import annotations

import csv
from pathlib import Path

from advlora.data.dataset import RetrievalDataset
from advlora.data.records import Format, image_root_of, load_json, problem, read_json_lines, records_to_dataset
from advlora.errors import AdvloraError


def record_captions(rec: dict, source: Path, n: int) -> tuple[str, list[str]] | None:
    """(image, captions) of a generic record, or None after reporting the missing key as a problem."""
    if not isinstance(rec, dict) or "image" not in rec:
        return problem(f"{source}: record {n + 1} is missing the key 'image'")
    caps = rec.get("captions", rec.get("caption"))
    if caps is None:
        return problem(f"{source}: record {n + 1} is missing the key 'captions' (or 'caption')")
    return rec["image"], caps


def read_jsonl(path: Path, split: str | None = None, image_root: str | Path | None = None) -> RetrievalDataset:
    """Generic JSON lines: one ``{"image", "captions"}`` object per line."""
    recs = [record_captions(r, path, n) for n, r in enumerate(read_json_lines(path))]
    return records_to_dataset(recs, image_root_of(path, image_root), path.stem, path)


def read_json_list(path: Path, split: str | None = None, image_root: str | Path | None = None
                   ) -> RetrievalDataset:
    """A JSON list of ``{"image", "caption"|"captions"}`` objects (also the BLIP / ALBEF / LAVIS files).

    Records naming the same image merge (LAVIS train files hold one caption per record).
    """
    data = load_json(path)
    if not isinstance(data, list):
        raise AdvloraError(f"{path}: expected a JSON list of {{'image', 'caption'}} records")
    recs = [record_captions(r, path, n) for n, r in enumerate(data)]
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


def _suffix(suffix: str):
    return lambda path, head: path.suffix.lower() == suffix


FORMATS = (
    Format("jsonl", read_jsonl, _suffix(".jsonl"), "JSON lines of {image, captions}"),
    Format("csv", read_csv, _suffix(".csv"), "CSV with columns image and caption / captions"),
    Format("json", read_json_list, _suffix(".json"), "a JSON list of {image, caption(s)}"),
)
