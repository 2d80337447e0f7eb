"""The few-shot protocol's data pieces: the k-shot sample, its record, and the base-to-new class split.

``few_shot(dataset, shots, seed)`` picks min(shots, available) images of every class. Each class is
permuted on its own by a generator seeded with (``seed``, the class name), over its images sorted by path,
and the first ``shots`` are kept: the sample depends only on the files, the shots and the seed (never on the
method, the order the set was read in, or the other classes), and the k-shot sample of a seed lies inside its
2k-shot sample. CoOp's Dassl draws the classes from one generator instead, so its samples are not nested
(``methods-and-protocols.md`` section 6); the field's seeds 1, 2, 3 mean the same here as a seed, not the same
images. ``few_shot_record`` is what a run folder stores (``FEW_SHOT_FILE``): the settings and the image paths
with their class names, and ``record_indices`` finds those images again in a set.

``base_new_split(dataset)`` is CoOp's ``subsample_classes``: with n classes in sorted label order, base is
the first ceil(n / 2) and new the rest, each relabelled from 0 and keeping its class names. CoOp samples the
shots before it splits the classes; with per-class seeding, sampling before or after picks the same images.
The harmonic mean of the two accuracies is ``advlora.metrics.harmonic_mean``. A data set's two parts are
data sets of their own wherever ``--data`` is read: ``<set>:base`` and ``<set>:new`` (``split_part``,
``advlora.data.load_dataset``), so a run trains on ``emoji-cls:base`` and an experiment evaluates on either.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import torch

from advlora.data.classification import ClassificationDataset
from advlora.data.records import load_json
from advlora.errors import AdvloraError
from advlora.io import write_json

#: the file a run folder stores its k-shot sample in
FEW_SHOT_FILE = "fewshot.json"
RECORD_VERSION = 1
#: the parts of a base-to-new split, as a ``--data`` suffix names them (``emoji-cls:base``), in ``base_new_split``'s
#: order
PARTS = ("base", "new")


def _classification(dataset) -> ClassificationDataset:
    if not isinstance(dataset, ClassificationDataset):
        raise AdvloraError(f"{dataset.name}: a k-shot sample or a class split needs a classification set (class "
                           f"folders), not a {getattr(dataset, 'task', 'retrieval')} set")
    return dataset


def few_shot(dataset: ClassificationDataset, shots: int, seed: int) -> list[int]:
    """Indices (ascending) of a balanced k-shot sample: min(``shots``, available) images of every class."""
    ds = _classification(dataset)
    if shots < 1:
        raise AdvloraError(f"--shots must be >= 1, got {shots}")
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(ds.labels.tolist()):
        by_class.setdefault(c, []).append(i)
    picked: list[int] = []
    for c, members in by_class.items():
        members.sort(key=lambda i: ds.images[i])
        random.Random(f"{seed}|{ds.classes[c]}").shuffle(members)
        picked += members[:shots]
    return sorted(picked)


def few_shot_record(dataset: ClassificationDataset, shots: int, seed: int) -> dict:
    """The k-shot sample as a run folder stores it: ``shots``, ``seed``, the set's name and root, and per image
    its path (relative to the root, as the set lists it) and class name."""
    ds = _classification(dataset)
    idx = few_shot(ds, shots, seed)
    return {"version": RECORD_VERSION, "shots": shots, "seed": seed, "dataset": ds.name, "root": str(ds.root),
            "classes": len(ds.classes), "images": [ds.images[i] for i in idx],
            "labels": [ds.classes[int(ds.labels[i])] for i in idx]}


def write_few_shot(folder: str | Path, record: dict) -> Path:
    """Write ``record`` as ``folder/FEW_SHOT_FILE``; returns the path."""
    path = Path(folder) / FEW_SHOT_FILE
    write_json(path, record)
    return path


def read_few_shot(folder: str | Path) -> dict:
    """The record a run folder stores (``FEW_SHOT_FILE``)."""
    return load_json(Path(folder) / FEW_SHOT_FILE)


def record_indices(dataset: ClassificationDataset, record: dict) -> list[int]:
    """The indices in ``dataset`` of the images of ``record``, in its order; an image missing from the set, or
    of another class there, is an error (the set is not the one sampled)."""
    ds = _classification(dataset)
    where = {p: i for i, p in enumerate(ds.images)}
    out = []
    for path, name in zip(record["images"], record["labels"]):
        i = where.get(path)
        if i is None or ds.classes[int(ds.labels[i])] != name:
            raise AdvloraError(f"{ds.name}: the recorded k-shot image {path} ({name}) is not in this set")
        out.append(i)
    return out


def base_new_split(dataset: ClassificationDataset) -> tuple[ClassificationDataset, ClassificationDataset]:
    """(base, new): the images of the first ceil(n / 2) classes by label and of the rest, each relabelled from 0
    with its own class names (``<name>-base``, ``<name>-new``)."""
    ds = _classification(dataset)
    m = math.ceil(len(ds.classes) / 2)
    if len(ds.classes) < 2:
        raise AdvloraError(f"{ds.name}: a base-to-new split needs at least two classes")
    return _classes(ds, range(0, m), "base"), _classes(ds, range(m, len(ds.classes)), "new")


def split_part(spec: str) -> tuple[str, str | None]:
    """``"emoji-cls:base"`` -> ``("emoji-cls", "base")``; a spec without a part's suffix -> ``(spec, None)``."""
    head, sep, tail = str(spec).rpartition(":")
    return (head, tail) if sep and head and tail in PARTS else (str(spec), None)


def with_part(spec: str, part: str) -> str:
    """The ``--data`` value of ``part`` (``base`` or ``new``) of the set ``spec``."""
    if part not in PARTS:
        raise AdvloraError(f"a class part is one of {', '.join(PARTS)}, got {part!r}")
    return f"{split_part(spec)[0]}:{part}"


def class_part(dataset, part: str) -> ClassificationDataset:
    """The ``part`` (``base`` or ``new``) of ``base_new_split(dataset)``."""
    return base_new_split(dataset)[PARTS.index(part)]


def _classes(ds: ClassificationDataset, labels: range, part: str) -> ClassificationDataset:
    keep = [i for i, c in enumerate(ds.labels.tolist()) if c in labels]
    meta = {k: v for k, v in ds.meta.items() if not k.startswith("_")}
    return ClassificationDataset(ds.root, [ds.images[i] for i in keep], [ds.classes[c] for c in labels],
                                 torch.zeros(0, dtype=torch.long), f"{ds.name}-{part}", ds.kind, meta,
                                 labels=torch.tensor([int(ds.labels[i]) - labels.start for i in keep],
                                                     dtype=torch.long), templates=ds.templates)


__all__ = ["FEW_SHOT_FILE", "PARTS", "base_new_split", "class_part", "few_shot", "few_shot_record", "read_few_shot",
           "record_indices", "split_part", "with_part", "write_few_shot"]
