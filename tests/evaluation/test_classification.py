"""Zero-shot classification: analytic accuracy clean and under attack, the imagefolder format, emoji-cls, the
multi-data transfer table and the results files with ``advlora results``."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from advlora.attacks import ThreatModel
from advlora.data import load_dataset
from advlora.data.classification import IMAGENET_TEMPLATES, ClassificationDataset
from advlora.data.formats import detect_format
from advlora.errors import AdvloraError
from advlora.evaluation.robust import evaluate_robust
from advlora.metrics import classification_accuracy, classification_ranks


class TwoChannelModel(torch.nn.Module):
    """A hand-built dual encoder: an image's feature is (mean of channel 0, mean of channel 1); the text "c0" is
    (1, 0) and "c1" is (0, 1). An image is class 0 iff its channel-0 mean is higher, and a linf perturbation of
    eps moves the difference of the two means by at most 2 eps (reached by lowering one channel and raising the
    other): an image of margin m is flipped exactly when m <= 2 eps (a tie counts against it)."""

    arch = "clip"
    default_targets: dict = {}
    tower_prefixes: dict = {}
    has_itm = False
    image_size = 4

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.logit_scale = torch.tensor(100.0)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        f = images[:, :2].mean(dim=(2, 3)) + 0 * self.dummy
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, texts, normalize: bool = True) -> torch.Tensor:
        return torch.stack([torch.tensor([1.0, 0.0]) if "c0" in t else torch.tensor([0.0, 1.0]) for t in texts])


#: (class, margin in 1/255): clean correct iff margin > 0; flipped at eps 4/255 iff margin <= 8
SAMPLES = [(0, 20), (0, 12), (0, 6), (0, 3), (0, -5), (1, 15), (1, 7), (1, 2)]


def _uniform_image(path, ch0: int, ch1: int) -> None:
    arr = torch.zeros(4, 4, 3, dtype=torch.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2] = ch0, ch1, 128
    Image.fromarray(arr.numpy()).save(path)


@pytest.fixture
def analytic_set(tmp_path) -> ClassificationDataset:
    names = []
    for i, (c, m) in enumerate(SAMPLES):
        hi, lo = 128 + m, 128
        _uniform_image(tmp_path / f"{i}.png", *((hi, lo) if c == 0 else (lo, hi)))
        names.append(f"{i}.png")
    return ClassificationDataset(tmp_path, names, ["c0", "c1"], torch.zeros(0), "analytic",
                                 labels=torch.tensor([c for c, _ in SAMPLES]), templates=("{}", "a {}"))


def test_classification_metrics_are_top_k_with_ties_against():
    scores = torch.tensor([[3.0, 1.0, 2.0], [1.0, 1.0, 0.0], [0.0, float("nan"), 5.0], [1.0, 2.0, 3.0]])
    labels = torch.tensor([0, 1, 2, 0])
    assert classification_ranks(scores, labels).tolist() == [0, 1, 1, 2]   # a tie and a NaN count against
    m = classification_accuracy(scores, labels)
    assert m["top1"] == m["i2t_r1"] == 25.0 and m["top5"] == 100.0 and m["nonfinite"] == 1
    assert m["r_mean"] == pytest.approx((25 + 100 + 100) / 3)


def test_analytic_accuracy_clean_and_under_attack(analytic_set):
    n = len(SAMPLES)
    correct = [m > 0 for _, m in SAMPLES]
    survive = [m > 8 for _, m in SAMPLES]
    out = evaluate_robust(TwoChannelModel(), analytic_set, ["pgd", "apgd"], ThreatModel(eps="4/255", steps=20),
                          sanity=True, sanity_limit=8)
    assert out["clean"]["top1"] == pytest.approx(100 * sum(correct) / n)            # 7 of 8
    for name in ("pgd", "apgd"):
        r = out["attacks"][name]
        assert r["metrics"]["top1"] == pytest.approx(100 * sum(survive) / n)       # 3 of 8: 4 flipped
        assert r["metrics"]["top5"] == 100.0                                       # two classes
        flipped = [c and not s for c, s in zip(correct, survive)]
        assert [rk > 0 for rk in r["ranks"]["i2t"]] == [not s for s in survive]
        assert r["asr"]["i2t"] == pytest.approx(100 * sum(flipped) / sum(correct))
        assert r["ranks"]["t2i"] == []                                             # no text-to-image direction
    assert out["verdict"].startswith("no sign of gradient masking"), out["verdict"]
    # a smaller eps flips only the margins <= 2 eps = 4/255: (0, 3) and (1, 2)
    small = evaluate_robust(TwoChannelModel(), analytic_set, ["pgd"], ThreatModel(eps="2/255", steps=20),
                            sanity=False)
    assert small["attacks"]["pgd"]["metrics"]["top1"] == pytest.approx(100 * 5 / 8)


def test_prompt_ensemble_averages_and_renormalises(tiny_clip, analytic_set):
    from advlora.models.video import for_dataset

    wrapped = for_dataset(tiny_clip, analytic_set)
    with torch.no_grad():
        got = wrapped.encode_text(["cat"])
        each = tiny_clip.encode_text(["cat", "a cat"])
    assert torch.allclose(got[0], F.normalize(each.mean(0), dim=0), atol=1e-6)
    assert for_dataset(wrapped, analytic_set) is wrapped


def _tree(root, split: str | None, classes: dict[str, int]) -> None:
    g = torch.Generator().manual_seed(0)
    for c, n in classes.items():
        d = root / split / c if split else root / c
        d.mkdir(parents=True)
        for k in range(n):
            Image.fromarray((torch.rand(12, 12, 3, generator=g) * 255).to(torch.uint8).numpy()).save(d / f"{k}.png")


def test_imagefolder_detected_and_read(tmp_path):
    flat = tmp_path / "flat"
    _tree(flat, None, {"golden_retriever": 2, "tabby_cat": 3})
    assert detect_format(flat) == "imagefolder"
    ds = load_dataset(str(flat))
    assert isinstance(ds, ClassificationDataset) and ds.classes == ["golden retriever", "tabby cat"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 1] and ds.templates == IMAGENET_TEMPLATES and len(ds.templates) == 80
    assert ds.load_images(8).shape == (5, 3, 8, 8) and ds.img2txt[2] == [1]
    small = ds.limit(2)
    assert small.classes == ds.classes and len(small) == 2            # every class stays in the gallery

    split = tmp_path / "split"
    _tree(split, "test", {"n01": 2, "n02": 1})
    _tree(split, "val", {"n01": 1, "n02": 1})
    (split / "classnames.txt").write_text("n01\tgoldfish\nn02\tgreat white shark\n")
    (split / "templates.txt").write_text("a photo of a {}.\nart of the {}.\n")
    assert detect_format(split) == "imagefolder"
    test, val = load_dataset(str(split), "test"), load_dataset(str(split), "val")
    assert (len(test), len(val)) == (3, 2) and test.classes == ["goldfish", "great white shark"]
    assert test.templates == ("a photo of a {}.", "art of the {}.") and test.prompts("x")[1] == "art of the x."

    (split / "templates.txt").write_text("no placeholder\n")
    with pytest.raises(AdvloraError, match="needs a"):
        load_dataset(str(split), "test")
    (split / "templates.txt").unlink()
    (split / "classnames.txt").write_text("only one name\n")
    with pytest.raises(AdvloraError, match="1 names for 2 class folders"):
        load_dataset(str(split), "test")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_text("hi")
    with pytest.raises(AdvloraError, match="is a folder"):
        load_dataset(str(empty))


def test_emoji_classes_and_a_small_build(tmp_path):
    from advlora.data.emoji import find_font
    from advlora.data.emoji_cls import base_emoji, build_emoji_cls, emoji_classes

    known = {"\U0001F44B", "\U0001F3C3"}
    assert base_emoji("\U0001F44B\U0001F3FD", known) == "\U0001F44B"                     # waving hand, a tone
    assert base_emoji("\U0001F3C3\u200d\u2642\ufe0f", known) == "\U0001F3C3"            # man running
    src, down = emoji_classes("source"), emoji_classes("downstream")
    assert all(len(v) >= 2 for v in src.values()) and "waving hand" in src and "person running" in src
    assert not set(map(tuple, src.values())) & set(map(tuple, down.values()))            # the parts stay apart
    try:
        find_font()
    except AdvloraError:
        pytest.skip("no emoji font")
    root = build_emoji_cls(tmp_path / "cls", max_classes=2, image_size=16)
    ds = load_dataset(str(root / "downstream"), "test")
    assert isinstance(ds, ClassificationDataset) and len(ds.classes) == 2
    assert ds.classes == list(down)[:2] and len(ds) == sum(len(v) for v in list(down.values())[:2])
    assert ds.templates[0] == "{}"


@pytest.fixture
def three_sets(tmp_path, tiny_clip):
    """Two retrieval folders, one class-folder tree, and a LoRA adapter whose run config says it was trained on
    the first."""
    from advlora.adapters import attach_adapter, save_adapter
    from advlora.models import save_model
    from advlora.models.tiny import random_model

    words = ["apple", "river", "stone", "cloud", "tiger", "piano"]
    sets = []
    for s in range(2):
        d = tmp_path / f"ret{s}"
        d.mkdir()
        g = torch.Generator().manual_seed(s)
        recs = []
        for i in range(4):
            Image.fromarray((torch.rand(16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()).save(d / f"{i}.png")
            recs.append({"image": f"{i}.png", "captions": [f"{words[i]} {words[(i + s + 1) % 6]}"]})
        (d / "ann.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
        sets.append(str(d / "ann.jsonl"))
    cls = tmp_path / "cls"
    _tree(cls, "test", {"apple": 2, "river": 2, "stone": 1})
    (cls / "templates.txt").write_text("{}\na {}\n")
    sets.append(str(cls))
    model_dir = tmp_path / "model"
    save_model(tiny_clip, model_dir)
    run = tmp_path / "run"
    tuned = random_model("clip", "test", seed=0)
    attach_adapter(tuned, "lora", rank=2)
    save_adapter(tuned, run / "adapter")
    (run / "config.yaml").write_text(f"data:\n  name: {sets[0]}\nadapter:\n  method: lora\n"
                                     "attack:\n  name: pgd\n  loss: adv\n")
    return model_dir, run / "adapter", sets


def test_multi_data_eval_prints_one_transfer_table_and_results_files(three_sets, tmp_path, capsys):
    from advlora.cli import main
    from advlora.evaluation.sweep import RECORD_KEYS, check_record

    model_dir, adapter, sets = three_sets
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(model_dir), "--adapter", str(adapter), "--data", ",".join(sets),
                 "--attacks", "pgd", "--steps", "2", "--no-sanity", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("transfer:") == 1 and "trained on" in printed
    table = printed[printed.index("transfer:"):].splitlines()
    rows = {s: next(ln for ln in table if ln.startswith(s)) for s in sets}
    assert rows[sets[0]].rstrip().endswith("yes") and rows[sets[1]].rstrip().endswith("no")
    assert "classification" in rows[sets[2]] and "top1" in rows[sets[2]]
    # a fresh LoRA changes nothing (B = 0): the change from the model without it is exactly zero
    assert all("+0.0" in rows[s] for s in sets)
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["datasets"]) == set(sets) and set(m["baseline"]["datasets"]) == set(sets)
    assert m["datasets"][sets[2]]["task"] == "classification"
    assert "top1" in m["datasets"][sets[2]]["robust"]["pgd@4/255"]["metrics"]
    files = sorted((out / "results").rglob("*.json"))
    assert len(files) == 6                                           # 3 sets x 1 threat x (adapter, base)
    for f in files:
        rec = json.loads(f.read_text(), parse_constant=lambda c, f=f: pytest.fail(f"{f}: {c} is not strict JSON"))
        assert check_record(rec) == [] and set(RECORD_KEYS) <= set(rec)
        assert rec["threat"]["eps_str"] == "4/255" and rec["attacks"] == ["pgd"]
        assert rec["robust"]["metrics"][rec["headline"]] <= rec["clean"][rec["headline"]] + 1e-9
    adapted = [json.loads(f.read_text()) for f in files if f.parent.name == "adapter"]
    assert {r["method"] for r in adapted} == {"lora"} and all(r["trained_on"] == [sets[0]] for r in adapted)

    bad = out / "results" / "broken.json"
    bad.write_text(json.dumps({"schema": "advlora.results/1", "model": "x"}))
    assert main(["results", str(out), str(tmp_path / "missing")]) == 2
    capsys.readouterr()
    assert main(["results", str(out)]) == 0
    captured = capsys.readouterr()
    assert "6 results files" in captured.out and "broken.json: skipped" in captured.err
    lines = captured.out.splitlines()
    assert lines[0].split()[:3] == ["data", "model", "adapter"]
    assert sum("classification" in ln for ln in lines) == 2 and sum(" yes " in ln for ln in lines) == 1


def test_classification_rejects_text_attacks(analytic_set):
    from advlora.evaluation.sweep import SweepSettings, evaluate_data

    with pytest.raises(AdvloraError, match="image attacks only"):
        evaluate_data(TwoChannelModel(), analytic_set, [ThreatModel()], SweepSettings(attacks=["text"]))


@pytest.mark.slow
def test_acceptance_emoji_sets_one_table(monkeypatch, tmp_path, capsys):
    """``advlora eval --data emoji-downstream,emoji-source,emoji-cls`` on the real embedded sets and tiny-clip
    (the default cache: built and pre-trained there on first use, minutes)."""
    from advlora.cli import main

    monkeypatch.delenv("ADVLORA_HOME", raising=False)
    assert main(["eval", "--model", "tiny-clip", "--data", "emoji-downstream,emoji-source,emoji-cls", "--limit", "8",
                 "--attacks", "pgd", "--steps", "2", "--no-sanity", "--out", str(tmp_path / "acc")]) == 0
    out = capsys.readouterr().out
    table = out[out.index("transfer:"):].splitlines()
    assert out.count("transfer:") == 1
    assert [ln.split()[0] for ln in table[2:5]] == ["emoji-downstream", "emoji-source", "emoji-cls"]
    assert "classification" in table[4] and "216 classes" in out
