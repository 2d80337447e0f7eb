"""What every annotation format module builds on: the ``Format`` declaration and the shared record helpers.

A format module (``generic``, ``standard``, ``video``, ...) declares ``FORMATS``, a tuple of ``Format``: a name
for ``--format``, a reader ``(path, split, image_root=None) -> RetrievalDataset`` and optionally a detector
``(path, head) -> bool`` that recognises the format from the file's name and its first ``HEAD_BYTES``
characters (big files are not parsed twice). ``advlora.data.formats`` composes the modules; nothing here
knows which formats exist.

Readers report a bad record through ``problem``: one ``AdvloraError`` naming the file and the record, or,
inside ``collecting_problems()`` (``advlora data check``), a collected line with the record skipped.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch

from advlora.data.dataset import RetrievalDataset
from advlora.errors import AdvloraError

#: (path, split, image_root=None) -> RetrievalDataset
Reader = Callable[..., RetrievalDataset]
#: (path, head: the file's first HEAD_BYTES characters) -> whether the file is in this format
Detector = Callable[[Path, str], bool]
#: characters of a file a detector sees
HEAD_BYTES = 65536


@dataclass(frozen=True)
class Format:
    """One annotation format: its ``--format`` name, its reader and (when it can be recognised) its detector."""

    name: str
    read: Reader
    detect: Detector | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.name or not callable(self.read) or (self.detect is not None and not callable(self.detect)):
            raise ValueError(f"format {self.name!r}: a name, a callable reader and an optional callable detector")


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


def records_to_dataset(records: Iterable[tuple[str, list[str]] | None], root: Path, name: str, source: Path,
                       merge_duplicates: bool = True) -> RetrievalDataset:
    """Group (image, captions) records by image (first-seen order), validating paths and captions.

    A record given as None was already reported as a problem and is skipped.
    """
    order: dict[str, int] = {}
    images: list[str] = []
    captions: list[str] = []
    txt2img: list[int] = []
    root_resolved = root.resolve()
    for n, rec in enumerate(records):
        if rec is None:
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


def image_root_of(path: Path, image_root: str | Path | None) -> Path:
    """Where the paths in an annotation file are relative to: ``image_root``, default the file's folder."""
    if image_root is None:
        return path.parent
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise AdvloraError(f"--image-root {root}: no such folder")
    return root


def read_text(path: Path) -> str:
    """The file's text (UTF-8); a missing or unreadable file is one line naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AdvloraError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AdvloraError(f"{path}: cannot read annotation file ({type(e).__name__})") from None


def load_json(path: Path):
    """The file parsed as JSON; invalid JSON is one line naming the file and the line."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise AdvloraError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def read_json_lines(path: Path) -> list:
    """The objects of a JSON-lines file (a line that is not JSON is a problem, then skipped)."""
    out = []
    for n, line in enumerate(read_text(path).splitlines()):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                problem(f"{path}: line {n + 1} is not valid JSON ({e.msg})")
    return out


def read_head(path: Path) -> str:
    """The first ``HEAD_BYTES`` characters of the file, what detectors look at ("" when it cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(HEAD_BYTES)
    except OSError:
        return ""
