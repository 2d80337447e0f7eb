"""``advlora protocol base-to-new|cross-dataset|few-shot``: the base/new split, H per set, the k-shot sample shared
by every method and recorded, each command end to end on tiny class folders, and the protocol named in every
file it writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from advlora.cli import main
from advlora.data import load_dataset
from advlora.data.fewshot import split_part, with_part
from advlora.errors import AdvloraError
from advlora.experiments.protocol_runs import ProtocolSettings, base_to_new_table, grid_config
from advlora.experiments.spec import load_grid_config
from advlora.metrics import harmonic_mean
from advlora.runs import created_by

#: created in this (unsorted) order: the split must follow the sorted labels, not the order on disk
CLASSES = ("rocket", "cat_face", "red_apple", "green_heart", "dog_face")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved random test model and a class-folder tree (train 4, val 1, test 2 images per class)."""
    from train_utils import save_test_model

    root = tmp_path_factory.mktemp("proto")
    model = save_test_model(root / "model")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 4), ("val", 1), ("test", 2)):
        for c, name in enumerate(CLASSES):
            d = root / "cls" / split / name
            d.mkdir(parents=True)
            for i in range(n):
                a = (torch.rand(12, 12, 3, generator=g) * 80).to(torch.uint8)
                a[..., c % 3] += 150
                Image.fromarray(a.numpy()).save(d / f"{i}.png")
    (root / "cls" / "templates.txt").write_text("a photo of a {}.\n")
    return model, root / "cls"


def test_base_is_the_first_ceil_half_of_the_classes_by_sorted_label(tiny):
    _, cls = tiny
    names = sorted(c.replace("_", " ") for c in CLASSES)
    whole = load_dataset(str(cls), "test")
    base, new = load_dataset(f"{cls}:base", "test"), load_dataset(f"{cls}:new", "test")
    assert whole.captions == names
    assert base.captions == names[:3] and new.captions == names[3:]          # ceil(5 / 2) = 3
    for part in (base, new):   # every image keeps its class, relabelled from 0 within its part
        assert sorted(part.captions[int(c)] for c in part.labels) == sorted(
            whole.captions[int(c)] for c in whole.labels if whole.captions[int(c)] in part.captions)
    assert len(base) + len(new) == len(whole)
    assert split_part(f"{cls}:new") == (str(cls), "new") and split_part("emoji-cls") == ("emoji-cls", None)
    assert with_part("emoji-cls:base", "new") == "emoji-cls:new"


def _entry(top1: float, robust: float) -> dict:
    stat = lambda v: {"mean": v, "std": 0.0, "n": 1, "values": [v]}  # noqa: E731
    return {"clean": {"top1": stat(top1)}, "robust": {"pgd@2/255": {"metrics": {"top1": stat(robust)}}}}


def test_h_is_the_harmonic_mean_of_base_and_new_per_set_clean_and_robust():
    s = ProtocolSettings("base-to-new", "emoji-cls", [("A", "advlora"), ("Z", "frozen")], shots=[4])
    summary = {"eval": {"attacks": ["pgd"], "eps": ["2/255"], "steps": 10},
               "results": {"emoji-cls:base": {"A": _entry(80.0, 30.0), "Z": _entry(50.0, 0.0)},
                           "emoji-cls:new": {"A": _entry(40.0, 20.0), "Z": _entry(60.0, 10.0)}}}
    t = base_to_new_table(s, summary)
    rows = {r[0]: dict(zip(t["columns"], r)) for r in t["rows"]}
    assert rows["A"]["clean H"] == f"{harmonic_mean(80, 40):.1f}" == "53.3"
    assert rows["A"]["PGD-10 2/255 H"] == f"{harmonic_mean(30, 20):.1f}" == "24.0"
    assert rows["Z"]["clean H"] == "54.5" and rows["Z"]["PGD-10 2/255 H"] == "0.0"   # H is 0 when one side is
    assert rows["A"]["clean base"] == "80.0" and rows["A"]["clean new"] == "40.0"


def test_a_set_evaluated_from_two_training_sets_is_refused():
    base = {"datasets": ["a", "b"], "methods": [{"label": "z", "method": "frozen"}],
            "eval_on": {"a": ["a", "c"], "b": ["c"]}}
    with pytest.raises(AdvloraError, match="'c' is evaluated from both"):
        load_grid_config(None, base=base)
    with pytest.raises(AdvloraError, match="not among the training sets"):
        load_grid_config(None, base={**base, "eval_on": {"x": ["a"]}})


def test_every_method_trains_on_the_same_recorded_k_shot_sample_of_each_seed():
    cfg = grid_config(ProtocolSettings("few-shot", "d", [("L", "lora"), ("A", "advlora")], shots=[1, 4],
                                       seeds=[1, 2]))
    from advlora.experiments.spec import run_config_dict, train_cells

    runs = {(c.method.label, c.seed): run_config_dict(cfg, c)["data"] for c in train_cells(cfg)}
    assert runs[("L 4-shot", 2)] == runs[("A 4-shot", 2)] == {"name": "d", "shots": 4, "shot_seed": 2}
    assert runs[("L 1-shot", 1)]["shot_seed"] == 1


def _run(tmp_path, *argv) -> Path:
    out = tmp_path / argv[0]
    assert main(["protocol", *argv, "--steps", "1", "--batch-size", "4", "--train-attack-steps", "1",
                 "--attack-steps", "1", "--limit", "0", "--no-sanity", "--out", str(out)]) == 0
    return out


def _named(out: Path, kind: str) -> None:
    """The protocol is named in protocol.json, summary.json and every eval cell's metrics.json."""
    assert json.loads((out / "protocol.json").read_text())["protocol"]["name"] == kind
    assert json.loads((out / "summary.json").read_text())["protocol"]["name"] == kind
    cells = [f for f in (out / "cells").rglob("metrics.json") if f.parent.name.startswith("eval-")]
    assert cells and all(json.loads(f.read_text())["protocol"]["name"] == kind for f in cells)
    assert created_by(out) == f"protocol {kind}"              # the run-folder marker of the command


def test_base_to_new_end_to_end(tiny, tmp_path, capsys):
    model, cls = tiny
    out = _run(tmp_path, "base-to-new", "--data", str(cls), "--model", str(model), "--shots", "2", "--seeds", "1",
               "--method", "frozen=zero-shot", "--method", "lora=adv. LoRA", "--method", "advlora=AdvLoRA")
    printed = capsys.readouterr().out
    table = json.loads((out / "protocol.json").read_text())["tables"][0]
    assert table["columns"][:4] == ["method", "clean base", "clean new", "clean H"]
    assert "PGD-1 2/255 H" in table["columns"] and [r[0] for r in table["rows"]] == ["zero-shot", "adv. LoRA",
                                                                                     "AdvLoRA"]
    for row in table["rows"]:
        cell = dict(zip(table["columns"], row))
        for col in ("clean", "PGD-1 2/255"):
            b, n = float(cell[f"{col} base"]), float(cell[f"{col} new"])
            assert cell[f"{col} H"] == f"{harmonic_mean(b, n):.1f}"
    assert "clean H" in printed and "| method |" in (out / "table.md").read_text()
    _named(out, "base-to-new")
    # the k-shot sample: 2 images of each base class, the same for both trained methods, recorded
    samples = json.loads((out / "protocol.json").read_text())["samples"]
    (name, sample), = samples.items()
    assert sample["methods"] == ["adv. LoRA", "AdvLoRA"] and sample["images"] == 2 * 3 and sample["seed"] == 1
    rec = json.loads((out / sample["file"]).read_text())
    assert sorted(set(rec["labels"])) == sorted(c.replace("_", " ") for c in CLASSES)[:3]
    runs = [json.loads(p.read_text()) for p in sorted((out / "cells").rglob("run/fewshot.json"))]
    assert len(runs) == 2 and runs[0]["images"] == runs[1]["images"] == rec["images"]
    # evaluated on both parts: their own cells
    evals = sorted(p.name for p in (out / "cells").rglob("eval-*"))
    assert len(evals) == 6 and sum(e.endswith("-cls-new-2-255") for e in evals) == 3 and evals.count("eval-2-255") == 3
    # rerunning the same line resumes: nothing is redone, the same table
    again = _run(tmp_path, "base-to-new", "--data", str(cls), "--model", str(model), "--shots", "2", "--seeds", "1",
                 "--method", "frozen=zero-shot", "--method", "lora=adv. LoRA", "--method", "advlora=AdvLoRA")
    assert json.loads((again / "protocol.json").read_text())["tables"][0] == table


def test_cross_dataset_end_to_end_mixes_classification_and_retrieval(tiny, tmp_path):
    from train_utils import write_data

    model, cls = tiny
    ann = write_data(tmp_path / "ret", n=6)
    out = _run(tmp_path, "cross-dataset", "--data", str(cls), "--model", str(model), "--shots", "1",
               "--targets", f"{cls},{cls}:new,{ann}", "--method", "frozen=zero-shot", "--method", "lora=adv. LoRA")
    result = json.loads((out / "protocol.json").read_text())
    table = result["tables"][0]
    assert [r[0] for r in table["rows"]] == ["zero-shot", "adv. LoRA"]
    assert len(table["columns"]) == 1 + 3 * 2 and all(len(r) == len(table["columns"]) for r in table["rows"])
    assert f"{ann}: r_mean" in table["caption"] and f"{cls}: top1" in table["caption"]
    assert all(c != "-" for r in table["rows"] for c in r)
    _named(out, "cross-dataset")


def test_few_shot_sweep_end_to_end_gives_mean_and_spread_per_cell(tiny, tmp_path):
    model, cls = tiny
    out = _run(tmp_path, "few-shot", "--data", str(cls), "--model", str(model), "--shots", "1,2", "--seeds", "1,2",
               "--method", "lora=adv. LoRA")
    result = json.loads((out / "protocol.json").read_text())
    rows = result["tables"][0]["rows"]
    assert [(r[0], r[1]) for r in rows] == [("adv. LoRA", "1"), ("adv. LoRA", "2")]
    assert all("±" in c for r in rows for c in r[2:])           # two seeds: mean ± spread
    assert sorted((s["shots"], s["seed"], s["images"]) for s in result["samples"].values()) == [
        (1, 1, 5), (1, 2, 5), (2, 1, 10), (2, 2, 10)]
    _named(out, "few-shot")


def test_bad_input_is_one_line_and_a_foreign_folder_is_never_touched(tiny, tmp_path, capsys):
    model, cls = tiny
    assert main(["protocol", "base-to-new", "--data", f"{cls}:base", "--model", str(model)]) == 2
    assert "name the whole set" in capsys.readouterr().err
    assert main(["protocol", "few-shot", "--data", str(cls), "--method", "lorra"]) == 2
    assert "unknown adapter method" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["protocol", "base-to-new", "--data", str(cls), "--model", str(model), "--out", str(mine)]) == 2
    assert "did not create" in capsys.readouterr().err and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
