"""The embedded classification set ``digits``: scikit-learn's handwritten digits, real images shipped in its wheel.

``sklearn.datasets.load_digits`` holds 1,797 greyscale 8 x 8 images of the digits 0 to 9 (UCI's optical
recognition of handwritten digits, 43 writers, 17 grey levels) and reads them from the installed package, with
no download. They are written as 8 x 8 greyscale PNGs (levels 0..16 scaled to 0..255), so the loader's resize
brings them to the model's size like any image. Each class is split on its own by a seeded permutation into
``DIGIT_SPLITS`` (fractions of the class: train, val, test), so every split holds every digit in proportion.
Class names are the digits in words ("zero" .. "nine"), folders ``0_zero`` .. ``9_nine`` (sorted label order is
the digits' order). The build is an ``imagefolder`` tree under ``$ADVLORA_HOME/data/digits``.
"""
from __future__ import annotations

import functools
import random
from pathlib import Path

from advlora.data.emoji import cache_matches
from advlora.errors import AdvloraError, choices_error
from advlora.io import advlora_home, atomic_dir, atomic_write_text, write_json

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: fraction of each class in each split (train: the few-shot pool)
DIGIT_SPLITS: dict[str, float] = {"train": 0.6, "val": 0.2, "test": 0.2}
#: prompts: the name alone, CLIP's MNIST template, and a phrase of the kind
DIGIT_TEMPLATES = ("{}", 'a photo of the number: "{}".', "a handwritten digit {}.")
FORMAT_VERSION = 1


@functools.lru_cache(maxsize=1)
def load_digits_bunch():
    """scikit-learn's digits (``images`` (1797, 8, 8) in 0..16, ``target``), read once per process."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise AdvloraError("the digits set needs scikit-learn: pip install scikit-learn") from None
    return load_digits()


def split_indices(labels: list[int], seed: int) -> dict[str, list[int]]:
    """split -> image indices (ascending): each class permuted by a generator seeded with (``seed``, class) and
    cut into ``DIGIT_SPLITS`` fractions (train and val rounded, test the rest)."""
    out: dict[str, list[int]] = {s: [] for s in DIGIT_SPLITS}
    for c in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == c]
        random.Random(f"{seed}|digits|{c}").shuffle(members)
        start = 0
        for k, (split, frac) in enumerate(DIGIT_SPLITS.items()):
            end = len(members) if k == len(DIGIT_SPLITS) - 1 else start + round(frac * len(members))
            out[split] += members[start:end]
            start = end
    return {s: sorted(v) for s, v in out.items()}


def build_digits(root: str | Path | None = None, *, seed: int = 0, force: bool = False) -> Path:
    """Write the digits into ``root`` (default ``$ADVLORA_HOME/data/digits``) and return it; a finished build
    with the same settings is reused unless ``force``."""
    import numpy as np
    import sklearn
    from PIL import Image

    root = Path(root) if root is not None else advlora_home() / "data" / "digits"
    info = {"format_version": FORMAT_VERSION, "seed": seed, "splits": DIGIT_SPLITS,
            "scikit_learn": sklearn.__version__}
    if not force and cache_matches(root, info, ["classnames.txt", "templates.txt"]):
        return root
    data = load_digits_bunch()
    pixels = np.clip(np.rint(data.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = [int(y) for y in data.target]
    folders = [f"{c}_{name}" for c, name in enumerate(DIGIT_NAMES)]
    with atomic_dir(root) as tmp:
        counts = {}
        for split, indices in split_indices(labels, seed).items():
            for f in folders:
                (tmp / split / f).mkdir(parents=True)
            for i in indices:
                Image.fromarray(pixels[i]).save(tmp / split / folders[labels[i]] / f"{i:04d}.png")
            counts[split] = len(indices)
        atomic_write_text(tmp / "classnames.txt", "".join(f"{f}\t{n}\n" for f, n in zip(folders, DIGIT_NAMES)))
        atomic_write_text(tmp / "templates.txt", "\n".join(DIGIT_TEMPLATES) + "\n")
        write_json(tmp / "info.json", {**info, "images": counts})
    return root


def digits_path(split: str = "test") -> Path:
    """The imagefolder tree of ``digits``, built on first use."""
    if split not in DIGIT_SPLITS:
        raise choices_error("digits split", split, DIGIT_SPLITS)
    return build_digits()


__all__ = ["DIGIT_NAMES", "DIGIT_SPLITS", "DIGIT_TEMPLATES", "build_digits", "digits_path", "split_indices"]
