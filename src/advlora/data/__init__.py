"""Data: the embedded emoji benchmark, annotation formats, and ``load_dataset`` that resolves a ``--data`` value."""
from __future__ import annotations

from pathlib import Path

from advlora.data.dataset import RetrievalDataset
from advlora.data.digits import digits_path
from advlora.data.emoji import emoji_split_path
from advlora.data.emoji_cls import EMOJI_CLS_SETS, emoji_cls_path
from advlora.data.emoji_groups import EMOJI_GROUP_SETS, emoji_group_path
from advlora.data.emoji_video import emoji_video_split_path
from advlora.data.fewshot import class_part, split_part
from advlora.data.formats import FORMATS, read_annotations
from advlora.data.records import Format
from advlora.errors import AdvloraError

__all__ = ["FORMATS", "Format", "RetrievalDataset", "load_dataset"]

#: names that resolve to data advlora builds itself: name -> builder(split) -> annotation file path
EMBEDDED = ("emoji", "emoji-source", "emoji-downstream", "emoji-video", *EMOJI_CLS_SETS, *EMOJI_GROUP_SETS, "digits")


def load_dataset(spec: str, split: str = "test", *, fmt: str | None = None, limit: int | None = None,
                 seed: int = 0, image_root: str | Path | None = None, frames: int | None = None
                 ) -> RetrievalDataset:
    """Resolve ``--data``: ``emoji`` (built and cached on first use) or an annotation file / folder on disk.

    Args:
        spec: ``emoji`` (every emoji), ``emoji-source`` / ``emoji-downstream`` (its two disjoint parts, see
            ``advlora.data.emoji``), ``emoji-video``, the classification sets ``emoji-cls``,
            ``emoji-cls-source``, ``emoji-cls-downstream`` (``advlora.data.emoji_cls``), ``emoji-group``,
            ``emoji-subgroup`` (``advlora.data.emoji_groups``), ``digits`` (``advlora.data.digits``), or a
            path to an annotation file or a class-folder tree (``imagefolder``); any classification set
            with the suffix ``:base`` or ``:new`` is that part of its base-to-new split (``advlora.data.fewshot``).
        split: the split to read (embedded sets and formats that hold several splits).
        fmt: annotation format name (see ``FORMATS``); detected from the file when None.
        limit: a deterministic subset of this many images (or videos).
        image_root: the folder the file's image / video paths are relative to (default: the file's folder).
        frames: frames sampled per video (video sets; default 8).
    """
    whole, part = split_part(spec)
    if part is not None:
        ds = class_part(load_dataset(whole, split, fmt=fmt, image_root=image_root, frames=frames), part)
        return ds.limit(limit, seed)
    if spec in ("emoji", "emoji-source", "emoji-downstream"):
        ds = read_annotations(emoji_split_path(split, spec), "jsonl")
        ds.name = f"{spec}-{split}"
    elif spec in EMOJI_CLS_SETS or spec in EMOJI_GROUP_SETS or spec == "digits":
        tree = (emoji_cls_path(spec, split) if spec in EMOJI_CLS_SETS else
                emoji_group_path(spec, split) if spec in EMOJI_GROUP_SETS else digits_path(split))
        ds = read_annotations(tree, "imagefolder", split)
        ds.name = f"{spec}-{split}"
    elif spec == "emoji-video":
        ds = read_annotations(emoji_video_split_path(split), "video-jsonl")
        ds.name = f"emoji-video-{split}"
    else:
        path = Path(spec)
        if not path.exists():
            raise AdvloraError(f"--data {spec!r}: no such file and not an embedded data set "
                               f"({', '.join(EMBEDDED)})")
        ds = read_annotations(path, fmt, split, image_root=image_root)
    if spec in EMBEDDED:
        ds.meta["embedded"] = True  # no default augmentation: the emoji renders are theirs, and a flip would
        # turn a digit into another shape (see advlora.training.data)
    if frames is not None and ds.kind == "video":
        ds.frames = frames
    return ds.limit(limit, seed)
