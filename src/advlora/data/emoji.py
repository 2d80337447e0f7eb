"""The embedded ``emoji`` benchmark: every fully-qualified emoji rendered with Noto Color Emoji, named in words.

Captions come from the PyPI ``emoji`` package: the English name in plain words ("grinning face with big eyes",
"flag: japan", "waving hand: medium skin tone") and its aliases as extra captions. The splits share the set of
emoji (the task is to recognise an emoji in renders it has not seen, as a classification benchmark shares its
classes) and differ in their renders: seeded background colour, scale and position. The build is written in
the generic JSON-lines format under ``$ADVLORA_HOME/data/emoji`` through a temporary folder, then renamed.
"""
from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from advlora.errors import AdvloraError, choices_error
from advlora.io import advlora_home, atomic_dir, atomic_write_text, write_json

#: renders per emoji in each split (train holds several views so that pre-training sees each emoji often)
SPLITS: dict[str, int] = {"train": 8, "val": 1, "test": 1}
#: where the font is looked for when no path is given (Debian/Ubuntu, Fedora, Arch)
FONT_CANDIDATES = ("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
                   "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
                   "/usr/share/fonts/noto/NotoColorEmoji.ttf")
#: the only pixel size of Noto Color Emoji's bitmap (CBDT) strike
FONT_SIZE = 109
#: augmentation ranges: glyph size as a fraction of the image, background channel values
SCALE_RANGE = (0.6, 1.0)
FORMAT_VERSION = 2
#: the newest Unicode emoji version of the source part; every later emoji is downstream
SOURCE_MAX_VERSION = 5.0
#: data set name -> the part of the build it reads (None: every emoji)
EMOJI_SETS: dict[str, str | None] = {"emoji": None, "emoji-source": "source", "emoji-downstream": "downstream"}

_TONE = r"(?:light|medium-light|medium|medium-dark|dark) skin tone"
_HAIR = r"(?:bald|beard|blond hair|curly hair|red hair|white hair)"
_GROUPS = ("family", "kiss", "couple with heart")
_PEOPLE = r"(?:man|woman|person|boy|girl|child|adult)"


@dataclass(frozen=True)
class EmojiEntry:
    """One emoji: its character sequence, its name in words and extra captions (aliases)."""

    char: str
    name: str
    aliases: tuple[str, ...] = ()

    @property
    def captions(self) -> list[str]:
        return [self.name, *self.aliases]


# ---- names -----------------------------------------------------------------------------------------------
def is_flag(char: str) -> bool:
    """Regional-indicator pairs (country flags) and tag sequences (England, Scotland, Wales)."""
    cps = [ord(c) for c in char]
    if len(cps) == 2 and all(0x1F1E6 <= c <= 0x1F1FF for c in cps):
        return True
    return len(cps) > 2 and cps[0] == 0x1F3F4 and all(0xE0020 <= c <= 0xE007F for c in cps[1:])


def plain_name(short: str, char: str = "") -> str:
    """``:waving_hand_medium_skin_tone:`` -> ``waving hand: medium skin tone`` (the CLDR-style name in words)."""
    text = " ".join(short.strip(":").replace("_", " ").split()).lower()
    if is_flag(char):
        text = re.sub(r"^flag for ", "", text)
        return text if text.startswith("flag: ") else f"flag: {text}"
    if text.startswith("keycap "):
        return f"keycap: {text[len('keycap '):]}"
    parts = [m.group(0) for m in re.finditer(_TONE, text)]
    base = re.split(_TONE, text)[0].strip() if parts else text
    rest = text[text.rfind(parts[-1]) + len(parts[-1]):].strip() if parts else ""
    if not parts and (m := re.fullmatch(rf"({_PEOPLE}) ({_HAIR})", text)):
        base, rest = m.group(1), m.group(2)
    for group in _GROUPS:  # "kiss woman man" -> "kiss: woman, man"
        tail = base[len(group):].strip() if base.startswith(group + " ") else ""
        if tail and re.fullmatch(rf"{_PEOPLE}(?: {_PEOPLE})*", tail):
            base = f"{group}: {', '.join(tail.split())}"
    qualifiers = parts + ([rest] if rest else [])
    if not qualifiers:
        return base
    return f"{base}, {', '.join(qualifiers)}" if ":" in base else f"{base}: {', '.join(qualifiers)}"


def _key(text: str) -> str:
    """Comparison key for deduplication: accents, punctuation and case removed."""
    text = unicodedata.normalize("NFKD", text.replace("flag: ", ""))
    return "".join(c for c in text if c.isalnum()).lower()


def _is_code(alias: str) -> bool:
    """Aliases that are code-point codes (``u7533``), not words."""
    return re.fullmatch(r"u[0-9a-f]{4,5}", alias) is not None


@functools.lru_cache(maxsize=1)
def _entries() -> tuple[EmojiEntry, ...]:
    import emoji

    raw = [(char, plain_name(d["en"], char), [plain_name(a, char) for a in d.get("alias", [])])
           for char, d in emoji.EMOJI_DATA.items() if d.get("status") == emoji.STATUS["fully_qualified"]]
    names = {_key(name) for _, name, _ in raw}
    alias_owners: dict[str, set[str]] = {}
    for char, _, aliases in raw:
        for a in aliases:
            alias_owners.setdefault(_key(a), set()).add(char)
    out = []
    for char, name, aliases in raw:
        seen, kept = {_key(name)}, []
        for a in aliases:  # an alias that names another emoji too would be an ambiguous query: drop it
            k = _key(a)
            if k and k not in seen and k not in names and len(alias_owners[k]) == 1 and not _is_code(a):
                seen.add(k)
                kept.append(a)
        out.append(EmojiEntry(char, name, tuple(kept)))
    return tuple(out)


def emoji_entries() -> list[EmojiEntry]:
    """Every fully-qualified emoji of the ``emoji`` package, in the package's order, with captions in words."""
    return list(_entries())


# ---- rendering -------------------------------------------------------------------------------------------
def find_font(font_path: str | Path | None = None) -> Path:
    """The emoji font: ``font_path`` when given, else the first of ``FONT_CANDIDATES`` that exists."""
    if font_path is not None:
        p = Path(font_path).expanduser()
        if not p.is_file():
            raise AdvloraError(f"emoji font {p} not found: install fonts-noto-color-emoji or pass --font PATH")
        return p
    for c in FONT_CANDIDATES:
        if Path(c).is_file():
            return Path(c)
    raise AdvloraError(f"emoji font {FONT_CANDIDATES[0]} not found: install fonts-noto-color-emoji "
                       "or pass --font PATH")


@functools.lru_cache(maxsize=4)
def _font(path: str) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, FONT_SIZE)
    except OSError as e:
        raise AdvloraError(f"emoji font {path}: cannot load it ({e}); pass a colour emoji font with --font") from None


def render_glyph(char: str, font_path: str | Path | None = None) -> Image.Image | None:
    """The emoji drawn at the font's native 109 px (RGBA, cropped to its pixels); None when it draws nothing."""
    font = _font(str(find_font(font_path)))
    left, top, right, bottom = font.getbbox(char)
    im = Image.new("RGBA", (max(1, right - min(0, left)) + 8, max(1, bottom - min(0, top)) + 8), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((4 - min(0, left), 4 - min(0, top)), char, font=font, embedded_color=True)
    box = im.getchannel("A").getbbox()
    return im.crop(box) if box else None


_cached_glyph = functools.lru_cache(maxsize=256)(render_glyph)


def compose(glyph: Image.Image, size: int, *, background=(255, 255, 255), scale: float = 1.0,
            offset=(0.0, 0.0)) -> Image.Image:
    """Paste a glyph, its longer side ``scale * size`` px, centred then shifted by ``offset`` px, on a colour."""
    side = max(1, round(scale * size))
    ratio = side / max(glyph.size)
    w, h = max(1, round(glyph.width * ratio)), max(1, round(glyph.height * ratio))
    small = glyph.resize((w, h), Image.LANCZOS)
    canvas = Image.new("RGB", (size, size), tuple(int(c) for c in background))
    x = round((size - w) / 2 + offset[0])
    y = round((size - h) / 2 + offset[1])
    canvas.paste(small, (x, y), small)
    return canvas


def render_emoji(char: str, size: int, *, font_path: str | Path | None = None, background=(255, 255, 255),
                 scale: float = 1.0, offset=(0.0, 0.0)) -> Image.Image:
    """An RGB ``size`` x ``size`` image of one emoji.

    Args:
        scale: the glyph's longer side as a fraction of ``size``.
        offset: (dx, dy) shift in output pixels of the glyph from the centre.
    The glyph is drawn once at the font's 109 px bitmap size (cached per character), then resized.
    """
    glyph = _cached_glyph(char, None if font_path is None else str(font_path))
    if glyph is None:
        raise AdvloraError(f"emoji {char!r} (U+{ord(char[0]):04X}): the font has no glyph for it")
    return compose(glyph, size, background=background, scale=scale, offset=offset)


def augmentation(rng: random.Random, size: int) -> dict:
    """Seeded render parameters: a background colour, a scale, and a shift that keeps the glyph inside."""
    scale = rng.uniform(*SCALE_RANGE)
    room = (1.0 - scale) * size / 2
    return {"background": tuple(rng.randrange(256) for _ in range(3)), "scale": scale,
            "offset": (rng.uniform(-room, room), rng.uniform(-room, room))}


# ---- the build -------------------------------------------------------------------------------------------
def _render_one(job: tuple) -> tuple[int, str | None, dict[str, list[str]]]:
    """Render all views of emoji ``index`` for every split; returns (index, glyph hash, split -> files)."""
    index, char, root, font, seed, size, renders = job
    glyph = render_glyph(char, font)
    if glyph is None:
        return index, None, {}
    digest = hashlib.sha1(glyph.tobytes() + repr(glyph.size).encode()).hexdigest()
    files: dict[str, list[str]] = {}
    for split, n in renders.items():
        rng = random.Random(f"{seed}|{split}|{index}")
        for k in range(n):
            rel = f"images/{split}/{index:04d}-{k}.png"
            compose(glyph, size, **augmentation(rng, size)).save(Path(root) / rel, compress_level=1)
            files.setdefault(split, []).append(rel)
    return index, digest, files


def _build_info(font: Path, seed: int, image_size: int, limit: int | None, renders: dict[str, int]) -> dict:
    import emoji

    return {"format_version": FORMAT_VERSION, "emoji_package": emoji.__version__, "font": str(font),
            "seed": seed, "image_size": image_size, "limit": limit, "renders": renders,
            "source_max_version": SOURCE_MAX_VERSION}


def build_emoji(root: str | Path | None = None, *, font_path: str | Path | None = None, seed: int = 0,
                image_size: int = 64, force: bool = False, limit: int | None = None,
                renders: dict[str, int] | None = None, workers: int = 2) -> Path:
    """Render the benchmark into ``root`` (default ``$ADVLORA_HOME/data/emoji``) and return that folder.

    A finished build with the same settings is reused unless ``force``. ``limit`` renders only ``limit``
    emoji, the first of each part in turns (tests: a small build still has a source and a downstream part).
    Emoji the font draws as nothing, or exactly like an earlier emoji (newer sequences it does not know) give
    their names to the earlier one's images; both are listed in ``info.json``. Every split is written for each
    data set of ``EMOJI_SETS``: ``<split>.jsonl`` (every emoji) and ``<part>-<split>.jsonl`` per part.
    """
    root = Path(root) if root is not None else advlora_home() / "data" / "emoji"
    font = find_font(font_path)
    renders = dict(renders or SPLITS)
    info = _build_info(font, seed, image_size, limit, renders)
    if not force and cache_matches(root, info, [_split_file(n, s) for s in renders for n in EMOJI_SETS]):
        return root
    _font(str(font))  # fail early, in this process, on a font Pillow cannot read
    entries = _first(emoji_entries(), limit)
    with atomic_dir(root) as tmp:
        for split in renders:
            (tmp / "images" / split).mkdir(parents=True)
        jobs = [(i, e.char, str(tmp), str(font), seed, image_size, renders) for i, e in enumerate(entries)]
        results = _run(jobs, workers)
        kept, skipped = _merge_duplicates(entries, results, tmp)
        parts = {i: part_of(entries[i].char) for i, _, _ in kept}
        for name, part in EMOJI_SETS.items():
            for split in renders:
                lines = [json.dumps({"image": f, "captions": caps}, ensure_ascii=False)
                         for i, caps, files in kept if part in (None, parts[i]) for f in files[split]]
                atomic_write_text(tmp / _split_file(name, split), "\n".join(lines) + "\n")
        counts = {p: sum(v == p for v in parts.values()) for p in ("source", "downstream")}
        write_json(tmp / "info.json", {**info, "n_emoji": len(kept), "n_emoji_parts": counts, "skipped": skipped})
    return root


def _first(entries: list[EmojiEntry], limit: int | None) -> list[EmojiEntry]:
    """The first ``limit`` entries, taken from the source and the downstream part in turns (package order)."""
    if limit is None:
        return entries
    by_part = {p: [i for i, e in enumerate(entries) if part_of(e.char) == p] for p in ("source", "downstream")}
    picked: list[int] = []
    for k in range(limit):
        for p in ("source", "downstream")[k % 2:] + ("source", "downstream")[:k % 2]:
            rest = [i for i in by_part[p] if i not in picked]
            if rest:
                picked.append(rest[0])
                break
    return [entries[i] for i in sorted(picked)]


def _merge_duplicates(entries: list[EmojiEntry], results: list[tuple], tmp: Path
                      ) -> tuple[list[tuple[int, list[str], dict]], list[dict]]:
    """Drop emoji drawn as nothing; emoji drawn exactly alike share one image that carries all their names.

    The oldest emoji (lowest Unicode emoji version) keeps its renders, e.g. "flag: france" rather than
    "flag: clipperton island", and the newer sequences the font does not know become extra captions.
    """
    def age(r: tuple) -> tuple:
        return emoji_version(entries[r[0]].char), r[0]

    owner: dict[str, int] = {}
    captions: dict[int, list[str]] = {}
    skipped = []
    for index, digest, files in sorted(results, key=age):
        e = entries[index]
        if digest is None or digest in owner:
            reason = "no glyph" if digest is None else f"drawn like {entries[owner[digest]].name!r}"
            skipped.append({"char": e.char, "name": e.name, "reason": reason})
            if digest is not None:
                captions[owner[digest]] += e.captions
            for rel in (f for fs in files.values() for f in fs):
                (tmp / rel).unlink()
            continue
        owner[digest] = index
        captions[index] = e.captions
    files_of = {r[0]: r[2] for r in results}
    kept = [(i, captions[i], files_of[i]) for i in sorted(captions)]
    return kept, sorted(skipped, key=lambda s: s["name"])


def cache_matches(root: Path, info: dict, files: list[str] | None = None) -> bool:
    """True when the build at ``root`` was made with the same settings ``info`` and holds ``files`` (default:
    one ``<split>.jsonl`` per split of ``info["renders"]``), so it can be reused."""
    try:
        old = json.loads((root / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = files if files is not None else [f"{s}.jsonl" for s in info["renders"]]
    return all(old.get(k) == v for k, v in info.items()) and all((root / f).exists() for f in files)


def _run(jobs: list[tuple], workers: int) -> list[tuple]:
    if workers <= 1 or len(jobs) < 200:
        return [_render_one(j) for j in jobs]
    import multiprocessing as mp

    with mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Pool(workers) as pool:
        return pool.map(_render_one, jobs, chunksize=64)


def emoji_version(char: str) -> float:
    """The Unicode emoji version that introduced ``char`` (the ``emoji`` package's record; 99 when unknown)."""
    import emoji

    return float(emoji.EMOJI_DATA.get(char, {}).get("E", 99))


def part_of(char: str) -> str:
    """``"source"`` for emoji up to Emoji ``SOURCE_MAX_VERSION``, ``"downstream"`` for those added since."""
    return "source" if emoji_version(char) <= SOURCE_MAX_VERSION else "downstream"


def _split_file(name: str, split: str) -> str:
    """The file of one split of one data set inside the build: ``test.jsonl``, ``downstream-test.jsonl``."""
    part = EMOJI_SETS[name]
    return f"{split}.jsonl" if part is None else f"{part}-{split}.jsonl"


def emoji_split_path(split: str, name: str = "emoji") -> Path:
    """The JSON-lines file of one split of data set ``name`` (``EMOJI_SETS``), building the benchmark on first use."""
    if name not in EMOJI_SETS:
        raise choices_error("emoji data set", name, EMOJI_SETS)
    if split not in SPLITS:
        raise choices_error("emoji split", split, SPLITS)
    return build_emoji() / _split_file(name, split)
