"""Results in the formats the field reads (``advlora results --format``), reported entries kept apart from
measured ones, and adapter model cards: each one read back and compared with the results files it came from."""
from __future__ import annotations

import csv
import io
import json
import math
import random
from pathlib import Path

import pytest

from advlora.attacks.threat import format_eps
from advlora.evaluation.sweep import RESULTS_SCHEMA, check_record, result_file_name
from advlora.experiments import exports
from advlora.experiments.card import MARKER, card_results, front_matter
from advlora.experiments.reported import SHIPPED, load_reported
from advlora.experiments.results import Result

RETRIEVAL = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")


def record(task="retrieval", norm="linf", eps=4 / 255, seed=0, adapter="runs/a/adapter", data="emoji",
           model="openai/clip-vit-base-patch32"):
    """A valid results record with distinct, non-round numbers (``eps`` None: clean only)."""
    rng = random.Random(seed)
    if task == "retrieval":
        clean = {k: rng.uniform(20, 90) for k in RETRIEVAL}
        clean["r_mean"] = sum(clean.values()) / len(RETRIEVAL)
        robust = {k: v * rng.uniform(0.1, 0.9) for k, v in clean.items() if k != "r_mean"}
        robust["r_mean"] = sum(robust.values()) / len(RETRIEVAL)
    else:
        clean = {"top1": rng.uniform(30, 60), "top5": rng.uniform(60, 95)}
        robust = {k: v * rng.uniform(0.1, 0.9) for k, v in clean.items()}
    threat = None if eps is None else {"norm": norm, "eps": eps, "eps_str": format_eps(eps), "steps": 10,
                                       "step_size": eps / 4, "restarts": 1, "random_start": True, "seed": 0}
    key = None if eps is None else f"apgd@{format_eps(eps)}"
    rec = {"schema": RESULTS_SCHEMA, "model": model, "adapter": adapter, "method": "advlora" if adapter else "frozen",
           "objective": "fare" if adapter else None, "train_attack": "pgd", "trained_on": [], "data": data,
           "dataset": f"{data}-test", "split": "test", "task": task, "n_images": 64, "n_texts": 64 if task ==
           "retrieval" else 7, "threat": threat, "attacks": ["pgd", "apgd"],
           "budget": {"square_queries": 1000, "square_limit": None, "text_budget": 3, "objective": "contrastive",
                      "gallery": "full"},
           "headline": "r_mean" if task == "retrieval" else "top1", "clean": clean,
           "robust": None if eps is None else {"attack": key, "metrics": robust},
           "results": {} if eps is None else {key: {"attack": "apgd", "threat": "t", "metrics": robust,
                                                    "clean": clean, "asr": {"i2t": None}, "n_images": 64}},
           "sanity": {"verdict": "no sign of gradient masking", "checks": []}, "versions": {}, "commit": None,
           "time": None}
    assert check_record(rec) == []
    return rec


RECORDS = [record(), record("classification", seed=1), record("classification", "l2", 0.5, seed=2),
           record("retrieval", "l2", 0.25, seed=3), record(eps=None, seed=4), record("classification", eps=None,
                                                                                    seed=5, data="emoji-cls")]


def _through_text(fmt, docs: list[dict]) -> list[dict]:
    """The documents as the format's files hold them: JSON text, or CSV text read back with the csv module."""
    if fmt.render is None:
        return json.loads(json.dumps(docs, allow_nan=False))
    return list(csv.DictReader(io.StringIO(fmt.render(docs))))


def _same_numbers(back: dict | None, orig: dict | None, places: int | None) -> None:
    assert (back is None) == (orig is None)
    if back is None:
        return
    assert back and set(back) <= set(orig)
    for k, v in back.items():
        want = orig[k] if places is None else round(orig[k], places)
        assert math.isclose(v, want, rel_tol=1e-12, abs_tol=1e-12), (k, v, want)


def _same_threat(back: Result, orig: Result) -> None:
    assert (back.threat is None) == (orig.threat is None)
    if orig.threat is not None:
        assert back.threat.norm == orig.threat.norm and back.threat.eps_str == orig.threat.eps_str
        assert math.isclose(back.threat.eps, orig.threat.eps, rel_tol=1e-12)
        assert back.threat.steps == orig.threat.steps and back.attack == orig.attack


@pytest.mark.parametrize("name", ["advlora", "clip-benchmark", "robustbench", "csv"])
def test_each_format_reads_back_its_numbers_and_threat_model(name):
    fmt = exports.get(name)
    held = 0
    for rec in RECORDS:
        r = Result.from_record(rec)
        if fmt.applies(r):
            continue
        held += 1
        back = fmt.parse(_through_text(fmt, fmt.export(r)))
        places = 2 if name == "robustbench" else None      # RobustBench's strings hold two decimals
        _same_numbers(back.clean, r.clean, places)
        _same_numbers(back.robust, r.robust, places)
        _same_threat(back, r)
        assert back.task == r.task and back.dataset == r.dataset and back.model == r.model
        if name in ("advlora", "csv"):
            assert back == r                                # every field, not only the numbers
    assert held == {"robustbench": 2}.get(name, len(RECORDS))


def test_robustbench_holds_classification_under_linf_or_l2_as_its_strings():
    fmt = exports.get("robustbench")
    docs, notes = exports.export_all(fmt, [Result.from_record(r) for r in RECORDS])
    assert len(docs) == 2 and len(notes) == 2          # retrieval, and classification without a threat model
    linf, l2 = (d for _, d in docs)
    for d in (linf, l2):
        assert {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote"} <= set(d)
        assert isinstance(d["clean_acc"], str) and d["clean_acc"] == f"{float(d['clean_acc']):.2f}"
        assert d["reported"] == "" and "not RobustBench's AutoAttack" in d["footnote"]
    assert (linf["eps"], linf["norm"], l2["eps"], l2["norm"]) == ("4/255", "Linf", "0.5", "L2")
    assert fmt.path(docs[0][0], linf) == "model_info/emoji-test/Linf/openai_clip-vit-base-patch32_adapter.json"


def test_clip_benchmark_names_directions_and_fractions_as_clip_benchmark_does():
    r = Result.from_record(RECORDS[0])
    clean, attacked = exports.get("clip-benchmark").export(r)
    # image queries retrieve captions: CLIP_benchmark's text retrieval; caption queries: its image retrieval
    assert clean["metrics"]["text_retrieval_recall@5"] == pytest.approx(r.clean["i2t_r5"] / 100)
    assert clean["metrics"]["image_retrieval_recall@1"] == pytest.approx(r.clean["t2i_r1"] / 100)
    assert (clean["attack"], attacked["attack"]) == ("none", "apgd@4/255")
    assert attacked["eps"] == pytest.approx(4) and attacked["norm"] == "Linf" and attacked["iterations_adv"] == 10
    assert clean["task"] == "zeroshot_retrieval" and clean["language"] == "en"
    cls = exports.get("clip-benchmark").export(Result.from_record(RECORDS[1]))[1]
    assert set(cls["metrics"]) == {"acc1", "acc5"} and cls["task"] == "zeroshot_classification"


def _write(folder: Path, records: list[dict]) -> Path:
    for i, rec in enumerate(records):
        target = folder / ("adapter" if rec["adapter"] else "base") / f"{i}-{result_file_name(rec)}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(rec))
    return folder


@pytest.mark.parametrize("name", ["clip-benchmark", "robustbench", "csv"])
def test_results_format_out_writes_files_that_read_back(name, tmp_path, capsys):
    from advlora.cli import main

    runs = _write(tmp_path / "runs", RECORDS)
    out = tmp_path / "export"
    assert main(["results", str(runs), "--format", name, "--out", str(out)]) == 0
    fmt = exports.get(name)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    if name == "csv":
        rows = list(csv.DictReader(io.StringIO(files[0].read_text())))
        back = [fmt.parse([row]) for row in rows]
    elif name == "robustbench":
        assert all(f.relative_to(out).parts[0] == "model_info" for f in files)
        back = [fmt.parse([json.loads(f.read_text())]) for f in files]
    else:
        docs = [json.loads(f.read_text()) for f in files]
        clean = [d for d in docs if d["attack"] == "none"]
        back = [fmt.parse([c, *[d for d in docs if d["attack"] != "none" and d["dataset"] == c["dataset"]
                                and d["eps"] == c["eps"] and d["task"] == c["task"]]]) for c in clean]
    want = [Result.from_record(r) for r in RECORDS]
    want = [r for r in want if not fmt.applies(r)]
    assert len(back) == len(want)
    key = lambda r: (r.task, r.dataset, r.threat.eps_str if r.threat else "")  # noqa: E731
    for b, w in zip(sorted(back, key=key), sorted(want, key=key)):
        _same_numbers(b.clean, w.clean, 2 if name == "robustbench" else None)
        _same_threat(b, w)
    printed = capsys.readouterr()
    assert f"{name} files under" in printed.out


def test_a_reported_entry_never_appears_in_a_measured_table(tmp_path, capsys):
    from advlora.cli import main

    runs = _write(tmp_path / "runs", RECORDS[:2])
    reported = load_reported()
    assert main(["results", str(runs)]) == 0
    alone = capsys.readouterr().out
    assert main(["results", str(runs), "--reported"]) == 0
    out = capsys.readouterr().out
    measured, label, rest = out.partition("reported (published numbers, not measured here")
    assert label and measured.strip() in alone                 # the measured table is the one printed alone
    assert not any(r.model in measured for r in reported)
    assert sum(ln.startswith(tuple(r.model for r in reported)) for ln in rest.splitlines()) == len(reported)
    assert "openai/clip-vit-base-patch32" not in rest
    # the csv export carries both, told apart by the kind column; JSON formats leave reported entries out
    assert main(["results", str(runs), "--reported", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["kind"] for r in rows].count("reported") == len(reported) and rows[0]["kind"] == "measured"
    assert main(["results", str(runs), "--reported", "--format", "clip-benchmark"]) == 0
    captured = capsys.readouterr()
    assert all(d["model"] == "openai/clip-vit-base-patch32" for d in json.loads(captured.out))
    assert f"{len(reported)} not exported as clip-benchmark" in captured.err


def test_shipped_reported_file_cites_every_entry(tmp_path):
    entries = load_reported()
    assert entries and all(e.kind == "reported" and e.source and e.protocol for e in entries)
    assert {"fare", "tecoa"} <= {e.objective for e in entries}
    assert all(e.robust is None or e.threat is not None for e in entries)
    assert 'experiments/*.yaml' in (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert SHIPPED.is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: advlora.reported/1\ngroups:\n  - source: x\n")
    with pytest.raises(Exception, match="missing citation"):
        load_reported(bad)


def _adapter(tmp_path: Path) -> Path:
    folder = tmp_path / "runs" / "a" / "adapter"
    folder.mkdir(parents=True)
    (folder / "advlora.json").write_text(json.dumps({"format": 1, "method": "advlora", "model": "", "arch": "clip"}))
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "",
                                                             "peft_type": "LORA"}))
    return folder


def test_model_card_results_equal_the_results_files(tmp_path, monkeypatch, capsys):
    from advlora.cli import main

    monkeypatch.chdir(tmp_path)                         # the records name the adapter runs/a/adapter
    folder = _adapter(tmp_path)
    mine = [r for r in RECORDS if r["adapter"]]
    others = [record(adapter=None, seed=7), record(adapter="runs/b/adapter", seed=8)]
    _write(tmp_path / "ev", mine + others)
    assert main(["adapter", "card", str(folder), "--results", str(tmp_path / "ev")]) == 0
    text = (folder / "README.md").read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "peft" and meta["base_model"] == "openai/clip-vit-base-patch32"
    assert {"advlora", "fare", "adversarial-robustness"} <= set(meta["tags"]) and MARKER in text
    back = card_results(text)
    assert len(back) == len(mine)
    for b, rec in zip(back, mine):
        w = Result.from_record(rec)
        assert (b.data, b.dataset, b.task, b.model) == (w.data, w.dataset, w.task, w.model)
        assert b.clean == w.clean and b.robust == w.robust      # exact: YAML floats keep repr precision
        _same_threat(b, w)
    names = [m["name"] for res in meta["model-index"][0]["results"] for m in res["metrics"]]
    assert "robust top1 (l2 0.5, apgd)" in names and "clean r_mean" in names


def test_model_card_never_overwrites_a_readme_it_did_not_write(tmp_path, monkeypatch, capsys):
    from advlora.cli import main

    monkeypatch.chdir(tmp_path)
    folder = _adapter(tmp_path)
    _write(tmp_path / "ev", RECORDS[:1])
    (folder / "README.md").write_text("# my adapter\nnotes I wrote\n")
    assert main(["adapter", "card", str(folder), "--results", str(tmp_path / "ev")]) == 2
    assert (folder / "README.md").read_text() == "# my adapter\nnotes I wrote\n"
    assert "not written by advlora" in capsys.readouterr().err
    assert main(["adapter", "card", str(folder), "--results", str(tmp_path / "ev"), "--out",
                 str(tmp_path / "card.md")]) == 0
    (folder / "README.md").unlink()
    for _ in range(2):                                    # its own card is rewritten
        assert main(["adapter", "card", str(folder), "--results", str(tmp_path / "ev")]) == 0
    assert MARKER in (folder / "README.md").read_text()
    assert main(["adapter", "card", str(folder), "--results", str(tmp_path / "ev" / "base")]) == 2


def test_a_new_format_is_one_declaration(tmp_path, capsys):
    from advlora.cli import main

    runs = _write(tmp_path / "runs", RECORDS[:2])
    toy = exports.Format("toy", export=lambda r: [{"m": r.model, "clean": r.clean[r.headline]}],
                         parse=lambda docs: None, applies=exports.measured_only,
                         path=lambda r, d: f"{r.dataset}.json")
    with exports.registered(toy):
        assert main(["results", str(runs), "--format", "toy"]) == 0
        docs = json.loads(capsys.readouterr().out)
        assert sorted(d["clean"] for d in docs) == sorted(r["clean"][r["headline"]] for r in RECORDS[:2])
    assert main(["results", str(runs), "--format", "toy"]) == 2
    assert "clip-benchmark" in capsys.readouterr().err
