"""The embedded classification sets ``emoji-group`` and ``emoji-subgroup``: name an emoji's Unicode category.

Unicode sorts every emoji into a group ("Food & Drink") and a subgroup ("food-fruit") in its emoji test data
(UTS #51, ``emoji-test.txt``); the ``emoji`` package does not carry them, so ``emoji_groups.tsv`` beside this
module holds them: one subgroup a line, with its group and its fully-qualified emoji without skin-tone
modifiers (the ``Component`` group left out), derived from Unicode's file by ``write_group_table``. The
members of a class are the fully-qualified emoji of the ``emoji`` package without a skin-tone modifier whose
sequence is in the table (an emoji newer than the table's version is left out: ``info.json`` counts them);
classes keep the table's order (CLDR order), so the first half by label is the first half of the palette.
The class name is the group or subgroup in words ("food and drink", "food fruit").

Renders follow ``advlora.data.emoji_cls``: ``GROUP_SPLITS[split]`` per member and split, each split and each
set seeded on its own stream, the members shared by the splits (a split differs from another in its renders);
an emoji drawn like an earlier one is left out, and so is a class with fewer than two members. The build is
one ``imagefolder`` tree per set under ``$ADVLORA_HOME/data/emoji-groups``.
"""
from __future__ import annotations

import functools
from pathlib import Path

from advlora.data.emoji import cache_matches, emoji_entries, find_font
from advlora.data.emoji_cls import CLS_CLASSNAMES, write_class_folders
from advlora.errors import choices_error
from advlora.io import advlora_home, atomic_dir, atomic_write_text, write_json

#: data set name -> the level of the table it names
EMOJI_GROUP_SETS: dict[str, str] = {"emoji-group": "group", "emoji-subgroup": "subgroup"}
#: renders per member emoji in each split (train: the few-shot pool)
GROUP_SPLITS: dict[str, int] = {"train": 4, "val": 1, "test": 1}
#: the table of groups and subgroups (Unicode's emoji test data, see ``write_group_table``)
GROUP_TABLE = Path(__file__).with_name("emoji_groups.tsv")
#: groups that are not emoji to name (skin tones and hair styles on their own)
LEFT_OUT_GROUPS = ("Component",)
FORMAT_VERSION = 1
_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}


def sequence_key(char: str) -> str:
    """The table's key of an emoji: its code points in hex joined by ``_``, variation selectors left out."""
    return "_".join(f"{ord(c):X}" for c in char if c != "\ufe0f")


def read_emoji_test(text: str) -> list[tuple[str, str, str]]:
    """(group, subgroup, ``sequence_key``) of every fully-qualified emoji of an ``emoji-test.txt`` without a
    skin-tone modifier, outside ``LEFT_OUT_GROUPS``, in the file's order."""
    group = subgroup = ""
    out = []
    for line in text.splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif ";" in line and not line.startswith("#") and group not in LEFT_OUT_GROUPS:
            points, status = (s.strip() for s in line.split("#", 1)[0].split(";"))
            char = "".join(chr(int(p, 16)) for p in points.split())
            if status == "fully-qualified" and not _TONES & set(char):
                out.append((group, subgroup, sequence_key(char)))
    return out


def write_group_table(emoji_test: str | Path, out: str | Path = GROUP_TABLE) -> None:
    """Write the table from Unicode's ``emoji-test.txt``: its version and copyright lines as the header, then
    ``group<TAB>subgroup<TAB>keys`` (space-separated ``sequence_key``s) per subgroup."""
    text = Path(emoji_test).read_text(encoding="utf-8")
    head = [ln for ln in text.splitlines()[:12] if ln.startswith(("# Version:", "# Date:", "# ©", "# For terms"))]
    rows: dict[tuple[str, str], list[str]] = {}
    for group, subgroup, key in read_emoji_test(text):
        rows.setdefault((group, subgroup), []).append(key)
    header = ["# Emoji groups and subgroups of Unicode's emoji-test.txt (UTS #51): the fully-qualified emoji",
              "# without skin-tone modifiers, as code points (hex, joined by _, U+FE0F left out), one subgroup a",
              "# line. Derived by advlora.data.emoji_groups.write_group_table from:", *head]
    body = [f"{g}\t{s}\t{' '.join(keys)}" for (g, s), keys in rows.items()]
    atomic_write_text(out, "\n".join(header + body) + "\n")


@functools.lru_cache(maxsize=1)
def group_table() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """(group, subgroup, keys) per line of ``GROUP_TABLE``, in its order."""
    rows = []
    for line in GROUP_TABLE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            group, subgroup, keys = line.split("\t")
            rows.append((group, subgroup, tuple(keys.split())))
    return tuple(rows)


def table_version() -> str:
    """The Unicode emoji version the table was derived from (its ``# Version:`` line)."""
    for line in GROUP_TABLE.read_text(encoding="utf-8").splitlines():
        if line.startswith("# Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def in_words(label: str) -> str:
    """A group or subgroup as a class name: ``Food & Drink`` -> ``food and drink``, ``food-fruit`` ->
    ``food fruit``."""
    return " ".join(label.replace("&", "and").replace("-", " ").split()).lower()


def group_classes(level: str) -> tuple[dict[str, list[str]], int]:
    """(class name -> member emoji, package order; classes in table order) at ``level`` (group | subgroup), and
    the number of emoji without a skin-tone modifier that the table does not hold."""
    if level not in ("group", "subgroup"):
        raise choices_error("emoji table level", level, ("group", "subgroup"))
    label: dict[str, str] = {}
    for group, subgroup, keys in group_table():
        for k in keys:
            label[k] = in_words(group if level == "group" else subgroup)
    order = list(dict.fromkeys(label.values()))
    members: dict[str, list[str]] = {name: [] for name in order}
    missing = 0
    for e in emoji_entries():
        if _TONES & set(e.char):
            continue
        name = label.get(sequence_key(e.char))
        if name is None:
            missing += 1
        else:
            members[name].append(e.char)
    return {name: chars for name, chars in members.items() if chars}, missing


def build_emoji_groups(root: str | Path | None = None, *, max_classes: int | None = None,
                       max_members: int | None = None, seed: int = 0, image_size: int = 64,
                       renders: dict[str, int] | None = None, force: bool = False) -> Path:
    """Render ``emoji-group`` and ``emoji-subgroup`` into ``root`` (default ``$ADVLORA_HOME/data/emoji-groups``,
    one folder per level); returns it. ``max_classes`` / ``max_members``: only the first classes and the first
    members of each (tests). A finished build with the same settings is reused unless ``force``."""
    import emoji

    root = Path(root) if root is not None else advlora_home() / "data" / "emoji-groups"
    font = find_font()
    renders = dict(renders or GROUP_SPLITS)
    info = {"format_version": FORMAT_VERSION, "seed": seed, "image_size": image_size, "renders": renders,
            "max_classes": max_classes, "max_members": max_members, "table_version": table_version(),
            "emoji_package": emoji.__version__, "font": str(font)}
    if not force and cache_matches(root, info, [f"{lv}/{CLS_CLASSNAMES}" for lv in EMOJI_GROUP_SETS.values()]):
        return root
    with atomic_dir(root) as tmp:
        counts, missing = {}, 0
        for name, level in EMOJI_GROUP_SETS.items():
            classes, missing = group_classes(level)
            picked = [(c, chars[:max_members]) for c, chars in list(classes.items())[:max_classes]]
            counts[name] = write_class_folders(tmp / level, picked, seed=seed, size=image_size, renders=renders,
                                               font=str(font), stream=level)
        write_json(tmp / "info.json", {**info, "classes": counts, "emoji_not_in_table": missing})
    return root


def emoji_group_path(name: str, split: str = "test") -> Path:
    """The imagefolder tree of data set ``name`` (``EMOJI_GROUP_SETS``), building the sets on first use."""
    if name not in EMOJI_GROUP_SETS:
        raise choices_error("emoji group set", name, EMOJI_GROUP_SETS)
    if split not in GROUP_SPLITS:
        raise choices_error(f"{name} split", split, GROUP_SPLITS)
    return build_emoji_groups() / EMOJI_GROUP_SETS[name]


__all__ = ["EMOJI_GROUP_SETS", "GROUP_SPLITS", "build_emoji_groups", "emoji_group_path", "group_classes",
           "read_emoji_test", "sequence_key", "write_group_table"]
