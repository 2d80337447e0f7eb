"""The embedded classification sets ``emoji-cls``, ``emoji-cls-source`` and ``emoji-cls-downstream``.

The class of an emoji is its base emoji: the sequence left when the Unicode skin-tone modifiers (U+1F3FB to
U+1F3FF), hair components (U+1F9B0 to U+1F9B3), gender signs (U+2640, U+2642) and variation selectors are taken
out, when that sequence is an emoji itself ("man running: dark skin tone" -> "person running", "waving hand:
light skin tone" -> "waving hand"). Only classes with at least two member emoji are kept, so every class
gathers several images that differ in tone, gender or hair: the task is to name the emoji whatever its
variant, against the gallery of all class names. The class name is the base emoji's name in words.

The parts are kept apart as in ``advlora.data.emoji``: ``emoji-cls-source`` holds only emoji up to Emoji
``SOURCE_MAX_VERSION`` (what the tiny models were pre-trained on), ``emoji-cls-downstream`` only the newer ones;
a class exists in a part when two of its members are in that part. Renders are seeded apart from the
retrieval sets' (another seed stream), ``CLS_SPLITS[split]`` per member emoji and split: four in ``train`` (the
few-shot pool, ``advlora.data.fewshot``), one in ``val`` and ``test``. Each split has its own seed stream, so
the train split leaves the val and test renders as they were before it existed. The build is an
``imagefolder`` tree (``<part>/<split>/<class>/<image>.png``, with ``classnames.txt`` and ``templates.txt``) under
``$ADVLORA_HOME/data/emoji-cls``, read by the ``imagefolder`` format like any class-folder set.
"""
from __future__ import annotations

import random
from pathlib import Path

from advlora.data.emoji import (
    SOURCE_MAX_VERSION,
    augmentation,
    cache_matches,
    compose,
    emoji_entries,
    find_font,
    part_of,
    plain_name,
    render_glyph,
)
from advlora.errors import choices_error
from advlora.io import advlora_home, atomic_dir, atomic_write_text, write_json

#: data set name -> the part it holds (None: both)
EMOJI_CLS_SETS: dict[str, str | None] = {"emoji-cls": None, "emoji-cls-source": "source",
                                         "emoji-cls-downstream": "downstream"}
#: renders per member emoji in each split (train: the few-shot pool; a class of two members holds 8 images)
CLS_SPLITS: dict[str, int] = {"train": 4, "val": 1, "test": 1}
#: the prompts of the emoji sets: the class name as the tiny models saw names, and two short phrasings
EMOJI_TEMPLATES = ("{}", "an emoji of {}.", "a picture of {}.")
FORMAT_VERSION = 2
_STRIP = ({chr(c) for c in range(0x1F3FB, 0x1F400)} | {chr(c) for c in range(0x1F9B0, 0x1F9B4)}
          | {"\u2640", "\u2642", "\ufe0f"})
_ZWJ = "\u200d"


def base_emoji(char: str, known: set[str]) -> str:
    """The class key of ``char``: without tone, hair, gender and variation selectors, when that is an emoji in
    ``known`` (sequences without U+FE0F), else ``char`` itself (without U+FE0F)."""
    parts = ["".join(c for c in p if c not in _STRIP) for p in char.replace("\ufe0f", "").split(_ZWJ)]
    base = _ZWJ.join(p for p in parts if p)
    return base if base in known else char.replace("\ufe0f", "")


def emoji_classes(part: str | None = None) -> dict[str, list[str]]:
    """class name -> the member emoji (characters, package order) of ``part`` (None: both), for every class with
    at least two members there; classes in package order of their first member."""
    import emoji

    names = {k.replace("\ufe0f", ""): plain_name(v["en"], k) for k, v in emoji.EMOJI_DATA.items()}
    known = set(names)
    out: dict[str, list[str]] = {}
    for e in emoji_entries():
        if part is not None and part_of(e.char) != part:
            continue
        out.setdefault(names[base_emoji(e.char, known)], []).append(e.char)
    return {name: chars for name, chars in out.items() if len(chars) >= 2}


def _folder(index: int, name: str) -> str:
    return f"{index:03d}-" + "".join(c if c.isalnum() else "_" for c in name)[:40]


def build_emoji_cls(root: str | Path | None = None, *, max_classes: int | None = None, seed: int = 0,
                    image_size: int = 64, renders: dict[str, int] | None = None, force: bool = False) -> Path:
    """Render the classification sets into ``root`` (default ``$ADVLORA_HOME/data/emoji-cls``); returns it.

    ``max_classes``: only the first classes of each part (tests). A finished build with the same settings is
    reused unless ``force``. Emoji the font cannot draw, or draws exactly like an earlier one, are left out (a
    class left with fewer than two is not written).
    """
    root = Path(root) if root is not None else advlora_home() / "data" / "emoji-cls"
    font = find_font()
    renders = dict(renders or CLS_SPLITS)
    info = {"format_version": FORMAT_VERSION, "seed": seed, "image_size": image_size, "renders": renders,
            "max_classes": max_classes, "source_max_version": SOURCE_MAX_VERSION, "font": str(font)}
    done = [f"{_part_dir(n)}/{CLS_CLASSNAMES}" for n in EMOJI_CLS_SETS]
    if not force and cache_matches(root, info, done):
        return root
    with atomic_dir(root) as tmp:
        counts = {}
        for name in EMOJI_CLS_SETS:
            counts[name] = _build_part(tmp / _part_dir(name), EMOJI_CLS_SETS[name], max_classes, seed, image_size,
                                       renders, str(font))
        write_json(tmp / "info.json", {**info, "classes": counts})
    return root


CLS_CLASSNAMES = "classnames.txt"


def _part_dir(name: str) -> str:
    return EMOJI_CLS_SETS[name] or "all"


def _build_part(folder: Path, part: str | None, max_classes: int | None, seed: int, size: int,
                renders: dict[str, int], font: str) -> int:
    return write_class_folders(folder, list(emoji_classes(part).items())[:max_classes], seed=seed, size=size,
                               renders=renders, font=font, stream="cls")


def write_class_folders(folder: Path, classes: list[tuple[str, list[str]]], *, seed: int, size: int,
                        renders: dict[str, int], font: str, stream: str) -> int:
    """Render ``classes`` (class name -> member emoji) as an imagefolder tree in ``folder``; the number of
    classes written.

    Each member is rendered ``renders[split]`` times per split, seeded by (``seed``, ``stream``, split, member),
    so that a split's renders do not depend on the other splits (adding one leaves the others byte-identical)
    and sets with another ``stream`` get other renders. A member drawn exactly like an earlier one (a sequence
    the font lacks) is left out, and so is a class left with fewer than two members.
    """
    lines, seen = [], set()
    for index, (name, chars) in enumerate(classes):
        glyphs = []
        for c in chars:
            g = render_glyph(c, font)
            key = None if g is None else (g.size, g.tobytes())
            if key is not None and key not in seen:
                seen.add(key)
                glyphs.append((c, g))
        if len(glyphs) < 2:
            continue
        sub = _folder(index, name)
        lines.append(f"{sub}\t{name}")
        for split, n in renders.items():
            (folder / split / sub).mkdir(parents=True, exist_ok=True)
            for j, (char, glyph) in enumerate(glyphs):
                rng = random.Random(f"{seed}|{stream}|{split}|{char}")
                for k in range(n):
                    compose(glyph, size, **augmentation(rng, size)).save(folder / split / sub / f"{j:02d}-{k}.png",
                                                                        compress_level=1)
    atomic_write_text(folder / CLS_CLASSNAMES, "\n".join(lines) + "\n")
    atomic_write_text(folder / "templates.txt", "\n".join(EMOJI_TEMPLATES) + "\n")
    return len(lines)


def emoji_cls_path(name: str, split: str = "test") -> Path:
    """The imagefolder tree of data set ``name`` (``EMOJI_CLS_SETS``), building the sets on first use."""
    if name not in EMOJI_CLS_SETS:
        raise choices_error("emoji classification set", name, EMOJI_CLS_SETS)
    if split not in CLS_SPLITS:
        raise choices_error(f"{name} split", split, CLS_SPLITS)
    return build_emoji_cls() / _part_dir(name)


__all__ = ["CLS_SPLITS", "EMOJI_CLS_SETS", "EMOJI_TEMPLATES", "base_emoji", "build_emoji_cls", "emoji_classes",
           "emoji_cls_path", "write_class_folders"]
