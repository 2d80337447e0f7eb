"""The embedded emoji benchmark: names in words, deterministic renders, a small build, bad input."""
from __future__ import annotations

import json

import pytest

from advlora.data.emoji import build_emoji, emoji_entries, emoji_split_path, find_font, plain_name, render_emoji
from advlora.errors import AdvloraError

try:
    find_font()
    HAVE_FONT = True
except AdvloraError:
    HAVE_FONT = False
needs_font = pytest.mark.skipif(not HAVE_FONT, reason="Noto Color Emoji is not installed")


@pytest.mark.parametrize("short, char, name", [
    (":grinning_face_with_big_eyes:", "😃", "grinning face with big eyes"),
    (":Japan:", "🇯🇵", "flag: japan"),
    (":flag_for_Japan:", "🇯🇵", "flag: japan"),
    (":England:", "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f", "flag: england"),
    (":waving_hand_medium_skin_tone:", "👋🏽", "waving hand: medium skin tone"),
    (":waving_hand_medium-light_skin_tone:", "👋🏼", "waving hand: medium-light skin tone"),
    (":woman_medium_skin_tone_beard:", "🧔🏽‍♀️", "woman: medium skin tone, beard"),
    (":man_red_hair:", "👨‍🦰", "man: red hair"),
    (":kiss_woman_man_light_skin_tone:", "", "kiss: woman, man, light skin tone"),
    (":family_man_woman_boy:", "👨‍👩‍👦", "family: man, woman, boy"),
    (":handshake_light_skin_tone_dark_skin_tone:", "", "handshake: light skin tone, dark skin tone"),
    (":keycap_#:", "#️⃣", "keycap: #"),
    (":AB_button_(blood_type):", "🆎", "ab button (blood type)"),
])
def test_plain_name(short, char, name):
    assert plain_name(short, char) == name


def test_entries_cover_the_package_with_clean_unique_captions():
    import emoji

    entries = emoji_entries()
    fq = [c for c, d in emoji.EMOJI_DATA.items() if d["status"] == emoji.STATUS["fully_qualified"]]
    assert [e.char for e in entries] == fq
    by_char = {e.char: e for e in entries}
    assert by_char["😃"].name == "grinning face with big eyes" and "smiley" in by_char["😃"].aliases
    assert by_char["🇯🇵"].name == "flag: japan"
    all_caps = [c for e in entries for c in e.captions]
    assert len(all_caps) == len(set(all_caps)), "a caption naming two emoji would be an ambiguous query"
    assert sum(bool(e.aliases) for e in entries) > 300
    for e in entries:
        assert e.name and e.name not in e.aliases and e.name == e.name.lower()
        assert all(":" not in a[:1] and "_" not in a for a in e.aliases)


@needs_font
def test_render_is_deterministic_sized_and_follows_its_parameters():
    a = render_emoji("🐼", 40, background=(10, 200, 30), scale=0.7, offset=(3, -2))
    b = render_emoji("🐼", 40, background=(10, 200, 30), scale=0.7, offset=(3, -2))
    assert a.mode == "RGB" and a.size == (40, 40)
    assert a.tobytes() == b.tobytes()
    assert a.getpixel((0, 0)) == (10, 200, 30)  # the corner is background at scale 0.7
    assert render_emoji("🐼", 40, scale=0.7, offset=(6, 0)).tobytes() != a.tobytes()
    assert render_emoji("🐸", 40, background=(10, 200, 30), scale=0.7, offset=(3, -2)).tobytes() != a.tobytes()


@needs_font
def test_small_build_shares_the_emoji_set_and_differs_in_renders(tmp_path):
    from PIL import Image

    from advlora.data.formats import read_annotations

    kw = dict(limit=12, image_size=32, renders={"train": 2, "val": 1, "test": 1}, workers=1)
    root = build_emoji(tmp_path / "a", **kw)
    splits = {s: read_annotations(root / f"{s}.jsonl") for s in ("train", "val", "test")}
    assert len(splits["train"]) == 24 and len(splits["val"]) == len(splits["test"]) == 12
    caps = {s: {tuple(d.captions[j] for j in js) for js in d.img2txt} for s, d in splits.items()}
    assert caps["train"] == caps["val"] == caps["test"] and len(caps["test"]) == 12
    px = {s: [Image.open(d.image_path(i)).tobytes() for i in range(len(d))] for s, d in splits.items()}
    assert all(v != t for v, t in zip(px["val"], px["test"])), "val and test must be different renders"
    assert Image.open(splits["test"].image_path(0)).size == (32, 32)
    again = build_emoji(tmp_path / "b", **kw)  # a second build is byte-identical (seeded)
    assert (again / "test.jsonl").read_text() == (root / "test.jsonl").read_text()
    first = json.loads((root / "test.jsonl").read_text().splitlines()[0])["image"]
    assert (again / first).read_bytes() == (root / first).read_bytes()
    mtime = (root / "info.json").stat().st_mtime_ns
    assert build_emoji(tmp_path / "a", **kw) == root and (root / "info.json").stat().st_mtime_ns == mtime  # reused
    other = build_emoji(tmp_path / "a", seed=1, **kw)  # another seed rebuilds with other renders
    assert (other / first).read_bytes() != (again / first).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left behind"


def test_missing_font_is_one_clear_error(tmp_path):
    with pytest.raises(AdvloraError, match="nope.ttf.*fonts-noto-color-emoji.*--font"):
        build_emoji(tmp_path / "x", font_path=tmp_path / "nope.ttf", limit=2)
    assert not (tmp_path / "x").exists()


def test_unknown_split_lists_the_valid_ones():
    with pytest.raises(AdvloraError, match="unknown emoji split 'dev'.*test, train, val"):
        emoji_split_path("dev")


def test_cli_missing_font_exits_2(tmp_path, capsys):
    from advlora.cli import main

    assert main(["data", "emoji", "--font", str(tmp_path / "none.ttf"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.ttf" in err[0]


def test_cli_data_check_exit_status(image_text_folder, capsys):
    from advlora.cli import main

    assert main(["data", "check", str(image_text_folder)]) == 0
    (image_text_folder.parent / "img3.png").unlink()
    assert main(["data", "check", str(image_text_folder)]) == 1
    assert "img3.png" in capsys.readouterr().out


@needs_font
def test_source_and_downstream_parts_share_no_emoji_and_each_has_its_splits(tmp_path):
    """emoji-source (Emoji <= 5.0) and emoji-downstream (added since) split the emoji, not only the renders."""
    from advlora.data.emoji import EMOJI_SETS, SOURCE_MAX_VERSION, emoji_version
    from advlora.data.formats import read_annotations

    root = build_emoji(tmp_path / "e", limit=10, image_size=32, renders={"train": 2, "val": 1, "test": 1},
                       workers=1)
    by_char = {c: e for e in emoji_entries() for c in [e.char]}
    of_name = {e.name: e.char for e in by_char.values()}
    parts = {}
    for name, part in EMOJI_SETS.items():
        if part is None:
            continue
        splits = {s: read_annotations(root / f"{part}-{s}.jsonl") for s in ("train", "val", "test")}
        assert all(len(d) for d in splits.values()), f"{name}: every split holds images"
        groups = {s: {d.captions[js[0]] for js in d.img2txt} for s, d in splits.items()}
        assert groups["train"] == groups["val"] == groups["test"], f"{name}: its splits share its emoji"
        parts[part] = groups["test"]
    assert parts["source"] and parts["downstream"] and not parts["source"] & parts["downstream"]
    assert all(emoji_version(of_name[n]) <= SOURCE_MAX_VERSION for n in parts["source"])
    assert all(emoji_version(of_name[n]) > SOURCE_MAX_VERSION for n in parts["downstream"])
    whole = read_annotations(root / "test.jsonl")  # `emoji` keeps every emoji: the union of the parts
    assert {whole.captions[js[0]] for js in whole.img2txt} == parts["source"] | parts["downstream"]
    assert json.loads((root / "info.json").read_text())["n_emoji_parts"] == {"source": 5, "downstream": 5}


def test_unknown_emoji_data_set_lists_the_valid_ones():
    with pytest.raises(AdvloraError, match="unknown emoji data set 'emoji-target'.*emoji-downstream"):
        emoji_split_path("test", "emoji-target")
