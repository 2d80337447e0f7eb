"""The standard image-text benchmark annotation formats (COCO and Flickr30K test sets), read into ``RetrievalDataset``.

Formats (names for ``--format``; each declared in ``FORMATS`` with a detector that looks at the file's name and
first 64 kB, except ``lavis``, which the generic ``json`` reader reads):

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
from advlora.data.generic import read_json_list
from advlora.data.records import Format, image_root_of, load_json, problem, read_text, records_to_dataset
from advlora.errors import AdvloraError, choices_error

KARPATHY_SPLITS = {"train": ("train", "restval"), "restval": ("restval",), "val": ("val",), "test": ("test",)}
#: captions per image kept in Karpathy val/test splits (the standard 5k / 1k protocol)
EVAL_CAPTIONS = 5


def read_karpathy(path: Path, split: str | None = None, image_root: str | Path | None = None) -> RetrievalDataset:
    """Karpathy's ``dataset_*.json``: the images of ``split`` (default test) with their ``sentences[].raw``."""
    split = split or "test"
    if split not in KARPATHY_SPLITS:
        raise choices_error(f"split of {path.name}", split, KARPATHY_SPLITS)
    data = load_json(path)
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
    data = load_json(path)
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
    lines = read_text(path).splitlines()
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


def _json_object(path: Path, head: str) -> bool:
    return path.suffix.lower() == ".json" and head.lstrip().startswith("{")


def is_karpathy(path: Path, head: str) -> bool:
    """A JSON object with ``sentences``: Karpathy's ``dataset_*.json``."""
    return _json_object(path, head) and '"sentences"' in head


def is_coco_json(path: Path, head: str) -> bool:
    """A JSON object with ``file_name`` or ``annotations`` and no ``sentences``: the COCO captions layout."""
    return _json_object(path, head) and '"sentences"' not in head \
        and ('"file_name"' in head or '"annotations"' in head)


def is_flickr_txt(path: Path, head: str) -> bool:
    """Any ``.txt`` file: CLIP_benchmark's Flickr lists and Flickr30K's token file are the text formats."""
    return path.suffix.lower() == ".txt"


FORMATS = (
    Format("karpathy", read_karpathy, is_karpathy, "Karpathy's dataset_coco.json / dataset_flickr30k.json"),
    Format("coco-json", read_coco_json, is_coco_json, "CLIP_benchmark's coco_{split}_karpathy.json"),
    Format("flickr-txt", read_flickr_txt, is_flickr_txt, "CLIP_benchmark's flickr30k_{split}_karpathy.txt"),
    Format("lavis", read_json_list, None, "the BLIP / ALBEF / LAVIS JSON list"),
)
