"""The standard image-text benchmark annotation formats (COCO and Flickr30K test sets), read into ``RetrievalDataset``.

Formats (names for ``--format``; ``detect_standard`` recognises them from the file's name and first 64 kB):

- ``karpathy``: Karpathy's ``dataset_coco.json`` / ``dataset_flickr30k.json``: ``{"images": [{"filepath",
  "filename", "split", "sentences": [{"raw"}]}]}``. ``split`` selects ``test`` (default), ``val``, ``restval`` or
  ``train``, which includes ``restval`` as is customary (the 113k COCO training images). Test and val images
  keep their first 5 sentences (the standard protocol: COCO 5k test = 25,000 captions; a few COCO images
  carry 6 or 7); train keeps all.
- ``coco-json``: CLIP_benchmark's ``coco_{split}_karpathy.json`` (COCO captions layout, read by torchvision's
  ``CocoCaptions``): ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``; the images
  live in ``<root>/val2014`` (val, test) or ``<root>/train2014``, which is looked up when ``image_root`` is not given.
- ``flickr-txt``: CLIP_benchmark's ``flickr30k_{split}_karpathy.txt``: a header line, then ``<image>.jpg,<caption>``
  lines (split at the first ``.jpg,`` as CLIP_benchmark does: captions contain commas); tab-separated
  ``<image>#<n>\\t<caption>`` lines (Flickr30K's ``results_20130124.token``) are read too.
- ``lavis``: the BLIP / ALBEF / LAVIS JSON list (the generic ``json`` reader: ``image`` and ``caption`` as a string
  or list; records naming the same image merge).

Paths in Karpathy and LAVIS files are relative to the image folder, not to the annotation file: pass
``image_root`` (``--image-root``); it defaults to the annotation file's folder. Counting never opens an image.
"""
from __future__ import annotations

import re
from pathlib import Path

from advlora.data.dataset import RetrievalDataset
from advlora.data.formats import (_load_json, _read_text, image_root_of, problem, read_json_list,
                                  records_to_dataset)
from advlora.errors import AdvloraError, choices_error

KARPATHY_SPLITS = {"train": ("train", "restval"), "restval": ("restval",), "val": ("val",), "test": ("test",)}
#: captions per image kept in Karpathy val/test splits (the standard 5k / 1k protocol)
EVAL_CAPTIONS = 5
_HEAD = 65536


def read_karpathy(path: Path, split: str | None = None, image_root: str | Path | None = None) -> RetrievalDataset:
    """Karpathy's ``dataset_*.json``: the images of ``split`` (default test) with their ``sentences[].raw``."""
    split = split or "test"
    if split not in KARPATHY_SPLITS:
        raise choices_error(f"split of {path.name}", split, KARPATHY_SPLITS)
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AdvloraError(f"{path}: expected Karpathy's layout {{'images': [...]}}")
    wanted, recs, dropped = KARPATHY_SPLITS[split], [], 0
    for n, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "split" not in im:
            problem(f"{path}: image {n + 1} is missing the key 'split'")
            continue
        if im["split"] not in wanted:
            continue
        if "filename" not in im or "sentences" not in im:
            key = "filename" if "filename" not in im else "sentences"
            problem(f"{path}: image {n + 1} is missing the key {key!r}")
            recs.append(None)
            continue
        caps = [s.get("raw") if isinstance(s, dict) else None for s in im["sentences"] or []]
        if split in ("val", "test") and len(caps) > EVAL_CAPTIONS:
            dropped += len(caps) - EVAL_CAPTIONS
            caps = caps[:EVAL_CAPTIONS]
        rel = f"{im['filepath']}/{im['filename']}" if im.get("filepath") else im["filename"]
        recs.append((rel, caps))
    if not recs:
        raise AdvloraError(f"{path}: no images in split {split!r}")
    ds = records_to_dataset(recs, image_root_of(path, image_root), f"{path.stem}-{split}", path)
    ds.meta["captions_dropped"] = dropped
    return ds


def read_coco_json(path: Path, split: str | None = None, image_root: str | Path | None = None
                   ) -> RetrievalDataset:
    """CLIP_benchmark's ``coco_{split}_karpathy.json`` (COCO captions layout)."""
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise AdvloraError(f"{path}: expected the COCO captions layout {{'images': [...], 'annotations': [...]}}")
    files: dict[object, str] = {}
    for n, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            problem(f"{path}: image {n + 1} is missing the key 'id' or 'file_name'")
            continue
        files[im["id"]] = im["file_name"]
    caps: dict[object, list] = {i: [] for i in files}
    for n, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            problem(f"{path}: annotation {n + 1} is missing the key 'image_id' or 'caption'")
        elif ann["image_id"] not in caps:
            problem(f"{path}: annotation {n + 1} names image_id {ann['image_id']!r}, which is not in 'images'")
        else:
            caps[ann["image_id"]].append(ann["caption"])
    recs = [(files[i], caps[i]) for i in files]
    root = image_root_of(path, image_root) if image_root is not None else _coco_root(path, recs, split)
    return records_to_dataset(recs, root, path.stem, path)


def _coco_root(path: Path, recs: list, split: str | None) -> Path:
    """The annotation's folder, or its ``val2014`` / ``train2014`` subfolder when the first image is there."""
    if not recs:
        return path.parent
    first = recs[0][0]
    subs = ("train2014", "val2014") if split == "train" else ("val2014", "train2014")
    for cand in (path.parent, *(path.parent / s for s in subs)):
        if (cand / first).exists():
            return cand
    return path.parent


_JPG_COMMA = re.compile(r"\.(jpe?g|png),", re.IGNORECASE)


def read_flickr_txt(path: Path, split: str | None = None, image_root: str | Path | None = None
                    ) -> RetrievalDataset:
    """CLIP_benchmark's ``flickr30k_{split}_karpathy.txt`` (``image.jpg,caption`` after a header line)."""
    lines = _read_text(path).splitlines()
    by_image: dict[str, list[str]] = {}
    start = 1 if lines and not _split_line(lines[0]) else 0  # the header ("image,caption")
    for n, line in enumerate(lines[start:], start=start):
        if not line.strip():
            continue
        parts = _split_line(line.strip())
        if parts is None:
            problem(f"{path}: line {n + 1} is not '<image>.jpg,<caption>'")
            continue
        by_image.setdefault(parts[0], []).append(parts[1])
    return records_to_dataset(list(by_image.items()), image_root_of(path, image_root), path.stem, path)


def _split_line(line: str) -> tuple[str, str] | None:
    if "\t" in line:  # results_20130124.token: "1000092795.jpg#0\tTwo young guys ..."
        image, caption = line.split("\t", 1)
        return image.split("#", 1)[0], caption
    m = _JPG_COMMA.search(line)
    if m is None:
        return None
    return line[:m.end() - 1], line[m.end():]


def detect_standard(path: Path) -> str | None:
    """The benchmark format of ``path`` (image-text or video-text), or None for the generic formats."""
    suffix = path.suffix.lower()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(_HEAD)
    except OSError:
        return None
    stripped = head.lstrip()
    name = path.name.lower()
    video = any(k in head for k in ('"video"', '"clip_name"', '"video_id"'))
    if suffix == ".txt":
        return "flickr-txt"
    if suffix == ".csv":
        first = stripped.splitlines()[0].lower() if stripped else ""
        return "video-csv" if "video_id" in first and ("sentence" in first or "caption" in first) else None
    if suffix == ".jsonl":
        if video:
            return "didemo" if "didemo" in name else "video-jsonl"
        return None
    if suffix == ".json":
        if stripped.startswith("{"):
            if '"sentences"' in head:
                return "karpathy"
            if '"file_name"' in head or '"annotations"' in head:
                return "coco-json"
        if stripped.startswith("[") and video and '"image"' not in head:
            return "didemo" if "didemo" in name else "video-json"
    return None


STANDARD_FORMATS = {
    "karpathy": read_karpathy,
    "coco-json": read_coco_json,
    "flickr-txt": read_flickr_txt,
    "lavis": read_json_list,
}
