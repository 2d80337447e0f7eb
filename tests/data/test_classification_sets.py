"""The embedded classification sets with train splits (emoji-cls, emoji-group, emoji-subgroup, digits), the
k-shot sample and its record, the base-to-new split and the harmonic mean."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from advlora.data import EMBEDDED, load_dataset
from advlora.data.classification import ClassificationDataset
from advlora.errors import AdvloraError
from advlora.metrics import harmonic_mean


def _font_or_skip():
    from advlora.data.emoji import find_font

    try:
        find_font()
    except AdvloraError:
        pytest.skip("no emoji font")


def _files(root, splits):
    return {p.relative_to(root): p.read_bytes() for s in splits for p in sorted((root).glob(f"*/{s}/*/*.png"))}


# ---- emoji-cls: a train split that leaves val and test as they were ------------------------------------------
def test_emoji_cls_train_split_leaves_val_and_test_byte_identical(tmp_path):
    from advlora.data.emoji_cls import CLS_SPLITS, build_emoji_cls

    _font_or_skip()
    before = build_emoji_cls(tmp_path / "before", max_classes=2, image_size=16, renders={"val": 1, "test": 1})
    after = build_emoji_cls(tmp_path / "after", max_classes=2, image_size=16)
    assert CLS_SPLITS["train"] >= 1 and not list(before.glob("*/train"))
    old, new = _files(before, ("val", "test")), _files(after, ("val", "test"))
    assert old and old == new                                   # every val / test render unchanged, byte for byte
    train = load_dataset(str(after / "downstream"), "train")
    test = load_dataset(str(after / "downstream"), "test")
    assert train.classes == test.classes and len(train) == CLS_SPLITS["train"] * len(test)
    first_train = (after / "downstream" / "train" / train.images[0]).read_bytes()
    assert first_train not in set(new.values())                 # train renders come from their own stream


# ---- emoji-group / emoji-subgroup ---------------------------------------------------------------------------
EMOJI_TEST = """# Version: 99.0
# group: Smileys & Emotion
# subgroup: face-smiling
1F600                                                  ; fully-qualified     # x E1.0 grinning face
263A FE0F                                              ; fully-qualified     # x E0.6 smiling face
263A                                                   ; unqualified         # x E0.6 smiling face
# group: People & Body
# subgroup: hand-fingers-open
1F44B                                                  ; fully-qualified     # x E0.6 waving hand
1F44B 1F3FD                                            ; fully-qualified     # x E1.0 waving hand: medium skin tone
# group: Component
# subgroup: skin-tone
1F3FB                                                  ; component           # x E1.0 light skin tone
"""


def test_read_emoji_test_keeps_fully_qualified_untoned_emoji_outside_components(tmp_path):
    from advlora.data.emoji_groups import group_table, read_emoji_test, write_group_table

    assert read_emoji_test(EMOJI_TEST) == [("Smileys & Emotion", "face-smiling", "1F600"),
                                           ("Smileys & Emotion", "face-smiling", "263A"),
                                           ("People & Body", "hand-fingers-open", "1F44B")]
    (tmp_path / "t.txt").write_text(EMOJI_TEST, encoding="utf-8")
    write_group_table(tmp_path / "t.txt", tmp_path / "t.tsv")
    text = (tmp_path / "t.tsv").read_text(encoding="utf-8")
    assert "# Version: 99.0" in text and "Smileys & Emotion\tface-smiling\t1F600 263A\n" in text
    assert [g for g, _, _ in group_table()][0] == "Smileys & Emotion"      # the shipped table reads


def test_group_classes_follow_the_table():
    from advlora.data.emoji_groups import group_classes, in_words, table_version

    groups, missing = group_classes("group")
    assert list(groups) == ["smileys and emotion", "people and body", "animals and nature", "food and drink",
                            "travel and places", "activities", "objects", "symbols", "flags"]
    assert "\U0001F600" in groups["smileys and emotion"] and "\U0001F34E" in groups["food and drink"]
    assert not any("\U0001F3FD" in c for chars in groups.values() for c in chars)   # no skin-tone variants
    subgroups, _ = group_classes("subgroup")
    assert "\U0001F34E" in subgroups["food fruit"] and len(subgroups) > 50
    assert sum(map(len, groups.values())) == sum(map(len, subgroups.values())) > 1000
    assert 0 <= missing < 200 and table_version() == "14.0"
    assert in_words("Food & Drink") == "food and drink" and in_words("hand-fingers-open") == "hand fingers open"
    with pytest.raises(AdvloraError, match="level"):
        group_classes("colour")


def test_a_small_group_build_has_train_val_and_test(tmp_path):
    from advlora.data.emoji_groups import GROUP_SPLITS, build_emoji_groups, group_classes

    _font_or_skip()
    root = build_emoji_groups(tmp_path / "g", max_classes=3, max_members=3, image_size=16)
    groups, _ = group_classes("group")
    for split, n in GROUP_SPLITS.items():
        ds = load_dataset(str(root / "group"), split)
        assert isinstance(ds, ClassificationDataset) and ds.classes == list(groups)[:3]
        assert len(ds) == 3 * 3 * n and torch.bincount(ds.labels).tolist() == [3 * n] * 3
    val, test = _files(root, ("val",)), _files(root, ("test",))
    assert set(val.values()).isdisjoint(test.values())           # the splits differ in their renders
    sub = load_dataset(str(root / "subgroup"), "test")
    assert sub.classes[0] == "face smiling" and sub.templates[0] == "{}"


def test_new_sets_are_embedded_names():
    from advlora.data.emoji_groups import emoji_group_path

    assert {"emoji-group", "emoji-subgroup", "digits", "emoji-cls"} <= set(EMBEDDED)
    with pytest.raises(AdvloraError, match="split"):
        emoji_group_path("emoji-group", "dev")
    with pytest.raises(AdvloraError, match="split"):
        load_dataset("digits", "dev")


# ---- digits -------------------------------------------------------------------------------------------------
def test_digits_are_sklearn_images_split_per_class():
    from advlora.data.digits import DIGIT_NAMES, build_digits, load_digits_bunch

    sets = {s: load_dataset("digits", s) for s in ("train", "val", "test")}      # the embedded name
    root = build_digits()
    assert sets["test"].name == "digits-test" and sets["test"].root == root / "test"
    ref = load_digits_bunch()
    assert all(ds.classes == list(DIGIT_NAMES) for ds in sets.values())
    names = [set(ds.images) for ds in sets.values()]
    assert sum(map(len, names)) == len(ref.target) == 1797 and not (names[0] & names[1] or names[1] & names[2])
    train = sets["train"]
    for c in range(10):                                          # every digit in every split, ~60 / 20 / 20
        n = int((torch.as_tensor(ref.target) == c).sum())
        assert abs(int((train.labels == c).sum()) - 0.6 * n) <= 1
        assert int((sets["test"].labels == c).sum()) > 0.15 * n
    stamp = (root / "info.json").stat().st_mtime_ns
    path = train.image_path(5)
    index = int(path.stem)
    assert int(train.labels[5]) == ref.target[index]             # the folder is the digit
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (8, 8) and np.array_equal(pixels, np.rint(ref.images[index] * 255 / 16).astype(np.uint8))
    assert build_digits() == root and (root / "info.json").stat().st_mtime_ns == stamp      # cached


# ---- the k-shot sample ---------------------------------------------------------------------------------------
def _synthetic(counts: dict[str, int], order_seed: int | None = None) -> ClassificationDataset:
    items = [(f"{name}/{i:03d}.png", c) for c, (name, n) in enumerate(counts.items()) for i in range(n)]
    if order_seed is not None:
        random.Random(order_seed).shuffle(items)
    return ClassificationDataset("/nowhere", [p for p, _ in items], list(counts), torch.zeros(0, dtype=torch.long),
                                 "syn", labels=torch.tensor([c for _, c in items]))


COUNTS = {"apple": 30, "river": 5, "stone": 16, "cloud": 40}


def test_few_shot_is_balanced_and_deterministic():
    from advlora.data.fewshot import few_shot

    ds = _synthetic(COUNTS)
    idx = few_shot(ds, 16, seed=1)
    per_class = torch.bincount(ds.labels[idx], minlength=4).tolist()
    assert per_class == [min(16, n) for n in COUNTS.values()] == [16, 5, 16, 16]
    assert idx == sorted(set(idx)) and few_shot(ds, 16, seed=1) == idx             # identical across calls
    assert few_shot(ds, 16, seed=2) != idx                                         # another seed, another sample
    shuffled = _synthetic(COUNTS, order_seed=7)                                    # read in another order
    assert sorted(shuffled.images[i] for i in few_shot(shuffled, 16, 1)) == sorted(ds.images[i] for i in idx)
    four = {ds.images[i] for i in few_shot(ds, 4, 1)}
    assert four <= {ds.images[i] for i in idx} and len(four) == 16                 # 4 shots lie inside 16
    with pytest.raises(AdvloraError, match="shots"):
        few_shot(ds, 0, 1)


def test_few_shot_record_is_stored_and_found_again(tmp_path):
    from advlora.data.fewshot import (
        FEW_SHOT_FILE,
        few_shot,
        few_shot_record,
        read_few_shot,
        record_indices,
        write_few_shot,
    )

    ds = _synthetic(COUNTS)
    rec = few_shot_record(ds, 8, seed=3)
    path = write_few_shot(tmp_path, rec)
    assert path.name == FEW_SHOT_FILE
    back = read_few_shot(tmp_path)
    assert back == rec and back["shots"] == 8 and back["seed"] == 3 and len(back["images"]) == 8 * 3 + 5
    assert record_indices(ds, back) == few_shot(ds, 8, 3)
    shuffled = _synthetic(COUNTS, order_seed=1)
    assert [shuffled.images[i] for i in record_indices(shuffled, back)] == back["images"]
    smaller = _synthetic({"apple": 2, "river": 5, "stone": 16, "cloud": 40})
    with pytest.raises(AdvloraError, match="not in this set"):
        record_indices(smaller, back)


def test_few_shot_needs_a_classification_set():
    from advlora.data.dataset import RetrievalDataset
    from advlora.data.fewshot import few_shot

    ret = RetrievalDataset("/nowhere", ["a.png"], ["a cat"], torch.tensor([0]))
    with pytest.raises(AdvloraError, match="classification set"):
        few_shot(ret, 4, 1)


# ---- base-to-new and H --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 4, 5, 9])
def test_base_new_split_is_the_first_half_by_label(n):
    from advlora.data.fewshot import base_new_split

    names = [f"class{c}" for c in range(n)]
    ds = _synthetic({name: 3 + c for c, name in enumerate(names)}, order_seed=0)
    base, new = base_new_split(ds)
    m = math.ceil(n / 2)
    assert base.classes == names[:m] and new.classes == names[m:]
    assert len(base) + len(new) == len(ds) and base.name == "syn-base" and new.name == "syn-new"
    for part, offset in ((base, 0), (new, m)):
        assert int(part.labels.min()) == 0 and int(part.labels.max()) == len(part.classes) - 1   # relabelled
        for path, label in zip(part.images, part.labels.tolist()):
            assert path.startswith(names[label + offset] + "/")                              # names kept
    with pytest.raises(AdvloraError, match="two classes"):
        base_new_split(_synthetic({"only": 3}))


def test_harmonic_mean_per_set_and_at_zero():
    assert harmonic_mean(80.0, 40.0) == pytest.approx(2 * 80 * 40 / 120)
    assert harmonic_mean(50.0, 50.0) == 50.0
    assert harmonic_mean(0.0, 70.0) == 0.0 and harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_mean(float("nan"), 10.0))
    with pytest.raises(ValueError):
        harmonic_mean(-1.0, 10.0)
    base, new = {"a": 90.0, "b": 10.0}, {"a": 10.0, "b": 90.0}     # per set, then averaged: not H of the means
    per_set = [harmonic_mean(base[k], new[k]) for k in base]
    assert per_set == [pytest.approx(18.0)] * 2
    assert harmonic_mean(sum(base.values()) / 2, sum(new.values()) / 2) == 50.0


def test_sampling_before_or_after_the_class_split_gives_the_same_images():
    """CoOp samples the k shots before it drops the new classes; per-class seeding makes the order not matter."""
    from advlora.data.fewshot import base_new_split, few_shot

    ds = _synthetic(COUNTS, order_seed=3)
    whole = {ds.images[i] for i in few_shot(ds, 4, 2)}
    base, new = base_new_split(ds)
    for part in (base, new):
        assert {part.images[i] for i in few_shot(part, 4, 2)} == {p for p in whole if p.split("/")[0] in part.classes}
