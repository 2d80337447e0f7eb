"""advlora grid: cells, resume after an interruption without redoing finished cells, summary and report."""
from __future__ import annotations

import csv
import json

import pytest

from advlora.errors import AdvloraError
from advlora.experiments import backend
from advlora.experiments.grid import run_grid
from advlora.experiments.leaderboard.synthetic import synthetic_record
from advlora.experiments.results import find_records
from advlora.experiments.spec import eval_cells, load_grid_config, parse_eps, train_cells

GRID = {
    "name": "t", "model": "tiny-clip", "datasets": ["d1"], "seeds": [0, 1],
    "train": {"train": {"steps": 5}},
    "methods": [{"label": "zero-shot", "method": "frozen"}, {"label": "adv. LoRA", "method": "lora"},
                {"label": "AdvLoRA", "method": "advlora"}],
    "eval": {"attacks": ["fgsm", "pgd"], "eps": ["2/255"], "sweep_eps": ["4/255"], "limit": 10},
}


class FakePipeline:
    """Stands in for training and evaluation: records every call, can fail on the n-th training."""

    def __init__(self, fail_on_train: int | None = None):
        self.trained, self.evaluated, self.fail_on_train = [], [], fail_on_train

    def train_run(self, cfg, method, run_dict, out, on_step=None):
        if self.fail_on_train is not None and len(self.trained) + 1 == self.fail_on_train:
            raise KeyboardInterrupt  # the user pressing ctrl-c in the middle of a training
        self.trained.append((method, run_dict["train"]["seed"]))
        out.mkdir(parents=True, exist_ok=True)
        with (out / "history.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "loss", "lr", "alpha/vision_model.q_proj", "alpha/text_model.q_proj"])
            for s in range(1, 6):
                w.writerow([s, 2.0 / s, 1e-3, 1.0 + 0.01 * s, 1.0 - 0.01 * s])
        return {"trainable": 0 if method == "frozen" else 1000, "total": 10000, "share": 10.0, "train_time_s": 1.5}

    def load_trained(self, cfg, method, run):
        return method

    def evaluate(self, cfg, model, data_spec, attacks, eps, sanity=False, seed=0, provenance=None):
        self.evaluated.append((model, tuple(attacks), eps, seed))
        records = [synthetic_record(method=provenance["method"] or model, eps=parse_eps(eps), seed=seed)]
        clean = {"r_mean": 50.0 + seed, "i2t_r1": 40.0, "t2i_r1": 30.0}
        drop = {"frozen": 40, "lora": 20, "advlora": 15}[model] * parse_eps(eps) * 255 / 2
        entry = {"threat": f"linf eps={eps}", "n_images": 10, "clean": clean, "asr": {"i2t": 50.0, "t2i": 40.0},
                 "metrics": {k: max(0.0, v - drop) for k, v in clean.items()}}
        return {"clean": clean, "attacks": {a: entry for a in attacks},
                "sanity": ["PASS robust <= clean"] if sanity else [], "records": records}


@pytest.fixture
def fake(monkeypatch):
    def install(**kw):
        f = FakePipeline(**kw)
        for name in ("train_run", "load_trained", "evaluate"):
            monkeypatch.setattr(backend, name, getattr(f, name))
        return f
    return install


def test_cells_are_the_product():
    cfg = load_grid_config(None, base=GRID)
    tcs = train_cells(cfg)
    assert len(tcs) == 3 * 2
    # fgsm and pgd at 2/255 (with the sanity checks), plus pgd alone at the sweep eps
    assert [(c.attacks, c.eps, c.sanity) for c in eval_cells(cfg, tcs[0])] == [
        (("fgsm", "pgd"), "2/255", True), (("pgd",), "4/255", False)]


def test_grid_resumes_without_redoing_finished_cells(tmp_path, fake):
    cfg = load_grid_config(None, base=GRID)
    first = fake(fail_on_train=3)
    with pytest.raises(KeyboardInterrupt):
        run_grid(cfg, tmp_path)
    done_train = list(first.trained)
    assert len(done_train) == 2 and len(first.evaluated) == 2 * 2
    # a report of what is complete so far: nothing runs, the rest is listed as missing
    peek = fake()
    partial, _ = run_grid(cfg, tmp_path, report_only=True)
    assert peek.trained == [] and peek.evaluated == []
    assert len(partial["missing_cells"]) == 4 and (tmp_path / "report.md").is_file()
    second = fake()
    summary, table = run_grid(cfg, tmp_path)
    # nothing finished before the interruption is trained or evaluated again
    assert not set(done_train) & set(second.trained)
    assert len(second.trained) == 6 - 2 and len(second.evaluated) == (6 - 2) * 2
    assert summary["missing_cells"] == []
    third = fake()
    run_grid(cfg, tmp_path)
    assert third.trained == [] and third.evaluated == []
    # mean and spread over the two seeds (clean r_mean 50 and 51)
    clean = summary["results"]["d1"]["AdvLoRA"]["clean"]["r_mean"]
    assert clean["mean"] == pytest.approx(50.5) and clean["std"] == pytest.approx(0.7071, abs=1e-3)
    entry = summary["results"]["d1"]["AdvLoRA"]
    assert clean["values"] == [50.0, 51.0] and entry["clean_seeds"] == [0, 1]      # per seed, for paired changes
    assert entry["robust"]["pgd@2/255"]["seeds"] == [0, 1]
    assert "50.5 ± 0.7" in table
    for f in ("report.md", "report.html", "summary.json", "plots/robust_vs_eps.png", "plots/clean_vs_robust.png",
              "plots/alpha_trajectories.png", "plots/training_curves.png"):
        assert (tmp_path / f).is_file(), f
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["methods"]["AdvLoRA"]["robust"]["pgd@2/255"]["threat"] == "linf eps=2/255"
    # every eval cell also writes its results files, with the training run's label, seed and trainable count
    found, _ = find_records([str(tmp_path / "cells")])
    assert len(found) == 6 * 2
    runs = {(r["run"]["label"], r["run"]["seed"], r["run"]["trainable"]) for _, r in found}
    assert runs == {(label, seed, 0 if label == "zero-shot" else 1000)
                    for label in ("zero-shot", "adv. LoRA", "AdvLoRA") for seed in (0, 1)}


def test_changed_budget_is_not_silently_reused(tmp_path, fake):
    fake()
    run_grid(load_grid_config(None, base={**GRID, "seeds": [0]}), tmp_path)
    changed = load_grid_config(None, ["--train.train.steps", "7", "--seeds", "[0]"], base=GRID)
    with pytest.raises(AdvloraError, match="different configuration"):
        run_grid(changed, tmp_path)


def test_bad_grid_config_is_one_clear_error(tmp_path):
    with pytest.raises(AdvloraError, match="unknown attack 'pdg'"):
        load_grid_config(None, ["--eval.attacks", "[pdg]"], base=GRID)
    with pytest.raises(AdvloraError, match="eval.limit must be an integer"):
        load_grid_config(None, ["--eval.limit", "abc"], base=GRID)
    with pytest.raises(AdvloraError, match="malformed eps"):
        load_grid_config(None, ["--eval.eps", "[4/x]"], base=GRID)
    with pytest.raises(AdvloraError, match="unknown adapter method"):
        load_grid_config(None, base={**GRID, "methods": [{"label": "x", "method": "lorra"}]})
    bad = tmp_path / "g.yaml"
    bad.write_text("methods: [\n")
    with pytest.raises(AdvloraError, match="not valid YAML"):
        load_grid_config(bad)


def test_grid_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from advlora.cli import main

    assert main(["grid", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config file not found" in err[0]


def test_shipped_grid_configs_load():
    from advlora.cli.grid import resolve_config, shipped_configs

    names = shipped_configs()
    assert {"grid-tiny-clip", "grid-tiny-blip"} <= set(names)
    for n in names:
        cfg = load_grid_config(resolve_config(n))
        assert cfg.methods and train_cells(cfg)
    blip = load_grid_config(resolve_config("grid-tiny-blip"))
    assert blip.model == "tiny-blip" and blip.eval.rerank_k > 0
    assert [m.method for m in blip.methods] == ["frozen", "lora", "advlora"]


def test_a_method_row_names_its_training_objective():
    from advlora.cli.grid import resolve_config
    from advlora.experiments.spec import run_config_dict

    cfg = load_grid_config(None, base={**GRID, "methods": [
        {"label": "FARE-LoRA", "method": "lora", "objective": "fare"}, {"label": "adv. LoRA", "method": "lora"}]})
    cells = {tc.method.label: tc for tc in train_cells(cfg) if tc.seed == 0}
    assert run_config_dict(cfg, cells["FARE-LoRA"])["train"]["objective"] == "fare"
    assert "objective" not in run_config_dict(cfg, cells["adv. LoRA"])["train"]     # the budget's, as before
    with pytest.raises(AdvloraError, match="unknown training objective 'fair'"):
        load_grid_config(None, base={**GRID, "methods": [{"label": "x", "method": "lora", "objective": "fair"}]})
    peers, demo = load_grid_config(resolve_config("grid-peers")), load_grid_config(resolve_config("grid-tiny-clip"))
    assert peers.train == demo.train and vars(peers.eval) == vars(demo.eval)      # the demo's budget
    assert {(m.method, m.objective) for m in peers.methods} >= {("full", "fare"), ("lora", "fare"), ("lora", "tecoa")}


def test_ablation_variants_change_one_factor_each():
    from advlora.adapters.config import AdapterConfig
    from advlora.experiments.ablate import FACTORS, methods, reference, variants

    ref = reference()
    vs = variants()
    assert {"init=peft", "init=pissa", "rank=1", "rank=16", "alpha=fixed"} <= set(vs)
    for name, (factor, over) in vs.items():
        field = FACTORS[factor][0]
        assert list(over) == [field] and over[field] != ref[field], name
        AdapterConfig(method="advlora", **{**ref, **over})  # every variant is a valid configuration
    labels = [m["label"] for m in methods()]
    assert labels[:2] == ["zero-shot", "adv. LoRA (peft)"] and labels[2].startswith("reference")
    assert len(labels) == len(set(labels)) == 3 + len(vs)


def _ablation_summary(robust: dict[str, list[float]], seeds: list[int]) -> dict:
    """A summary as ``collect`` writes it, with the given robust r_mean per seed (clean 90 for all)."""
    from advlora.experiments.summarize import agg

    entries = {label: {"trainable": 100, "clean": {"r_mean": agg([90.0] * len(seeds))}, "clean_seeds": seeds,
                       "robust": {"pgd@4/255": {"seeds": seeds, "metrics": {"r_mean": agg(vals)}}}}
               for label, vals in robust.items()}
    return {"datasets": ["emoji"], "seeds": seeds, "results": {"emoji": entries}}


def test_ablation_changes_are_paired_by_seed_with_a_95_percent_interval(tmp_path):
    from advlora.experiments.ablate import ablation_rows, findings, reference, reference_label

    ref = reference_label(reference())
    summary = _ablation_summary({ref: [60.0, 62.0, 64.0],
                                 "rank=16": [61.0, 63.0, 65.0],          # +1 on every seed: better
                                 "init=peft": [64.0, 60.0, 62.0],        # +4, -2, -2: mean 0, noise
                                 "mode=zero_alpha": [55.0, 58.0, 60.0]},  # -5, -4, -4: worse
                                seeds=[0, 1, 2])
    header, rows = ablation_rows(summary)
    by = {r[0]: dict(zip(header, r)) for r in rows}
    assert by[ref]["robust change"] == "reference" and by[ref]["d robust"] == "+0.0 ± 0.0"
    assert by["rank=16"]["robust r_mean (pgd@4/255)"] == "63.0 ± 2.0"
    assert by["rank=16"]["d robust"] == "+1.0 ± 0.0" and by["rank=16"]["robust change"] == "better"
    assert by["init=peft"]["d robust"] == "+0.0 ± 8.6" and by["init=peft"]["robust change"] == "noise"
    # -4.33 ± t(2) 4.30 x sd 0.577 / sqrt(3) = 1.43
    assert by["mode=zero_alpha"]["d robust"] == "-4.3 ± 1.4" and by["mode=zero_alpha"]["robust change"] == "worse"
    said = "\n".join(findings(summary)[1][1])
    assert "rank: best robust r_mean with rank=16 (63.0 ± 2.0)" in said and "3 seeds" in said
    from advlora.experiments.ablate import plot_changes

    [(rel, caption)] = plot_changes(summary, tmp_path)
    assert (tmp_path / rel).stat().st_size > 1000 and "95% interval" in caption


def test_ablation_with_one_seed_gives_no_verdict():
    from advlora.experiments.ablate import ablation_rows, reference, reference_label

    ref = reference_label(reference())
    header, rows = ablation_rows(_ablation_summary({ref: [60.0], "rank=16": [61.5]}, seeds=[0]))
    by = {r[0]: dict(zip(header, r)) for r in rows}
    assert by["rank=16"]["d robust"] == "+1.5" and by["rank=16"]["robust change"] == "-"


def test_parallel_jobs_give_the_serial_results(tmp_path):
    """--jobs 2 runs the train cells in two spawned workers; the cells and their numbers are those of one process."""
    from train_utils import save_test_model, write_data

    model = save_test_model(tmp_path / "model")
    ann = write_data(tmp_path / "data", n=8)
    base = {"name": "p", "model": str(model), "datasets": [str(ann)], "seeds": [0],
            "train": {"train": {"steps": 2, "batch_size": 4, "threads": 1}, "attack": {"steps": 1}},
            "methods": [{"label": "zero-shot", "method": "frozen"}, {"label": "adv. LoRA", "method": "lora"},
                        {"label": "AdvLoRA", "method": "advlora"}],
            "eval": {"attacks": ["pgd"], "eps": ["4/255"], "steps": 2, "limit": 8, "sanity": False}}
    cfg = load_grid_config(None, base=base)
    par, _ = run_grid(cfg, tmp_path / "par", jobs=2)
    ser, _ = run_grid(cfg, tmp_path / "ser", jobs=1)
    assert list(par["methods"]) == list(ser["methods"]) == ["zero-shot", "adv. LoRA", "AdvLoRA"]
    for label, m in ser["methods"].items():
        p = par["methods"][label]
        assert p["clean"]["r_mean"] == pytest.approx(m["clean"]["r_mean"], abs=1e-6), label
        assert p["robust"]["pgd@4/255"]["r_mean"] == pytest.approx(m["robust"]["pgd@4/255"]["r_mean"], abs=1e-6)
    marks = sorted(p.relative_to(tmp_path / "par") for p in (tmp_path / "par").rglob("COMPLETE"))
    assert marks == sorted(p.relative_to(tmp_path / "ser") for p in (tmp_path / "ser").rglob("COMPLETE"))


@pytest.mark.parametrize("command", [["grid", "--config", "grid-tiny-clip"], ["ablate"]])
@pytest.mark.parametrize("seeds", ["0,x", "1,1"])
def test_bad_seeds_are_one_line_before_anything_runs(tmp_path, capsys, command, seeds):
    from advlora.cli import main

    assert main([*command, "--seeds", seeds, "--out", str(tmp_path / "out")]) == 2
    assert f"--seeds '{seeds}'" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_grid_prompts_trains_each_row_with_its_objective_on_a_few_shot_sample():
    from advlora.cli.grid import resolve_config
    from advlora.experiments.spec import run_config_dict
    from advlora.training import load_run_config

    cfg = load_grid_config(resolve_config("grid-prompts"))
    runs = {tc.method.label: load_run_config(None, base=run_config_dict(cfg, tc)) for tc in train_cells(cfg)}
    assert {k: (r.method, r.train.objective) for k, r in runs.items() if k != "zero-shot"} == {
        "APT": ("coop", "apt"), "AdvVP": ("visual-prompt", "tecoa"), "AdvMaPLe": ("maple", "tecoa"),
        "FAP": ("maple", "fap"), "adv. LoRA": ("lora", "tecoa"), "AdvLoRA": ("advlora", "tecoa"),
        "adv. full FT": ("full", "tecoa")}
    assert runs["FAP"].adapter.coupling == "vision-to-text" and runs["FAP"].attack.beta == 1.5
    assert runs["AdvMaPLe"].adapter.coupling == "text-to-vision"
    assert all(r.data.shots == 16 and r.data.name == "emoji-cls" for r in runs.values())
    assert cfg.eval.exit_k == 1 and set(cfg.eval.attacks) == {"pgd", "standard"}


def test_the_eval_exit_rank_reaches_the_suite_and_only_a_set_one_changes_the_fingerprint(monkeypatch):
    from advlora.experiments.grid import eval_fingerprint

    seen = {}

    class Result:
        runs = [{"protocol": "p"}]

    monkeypatch.setattr(backend, "dataset", lambda *a, **k: None)
    monkeypatch.setattr(backend, "evaluate_data", lambda m, d, th, settings, **k: seen.update(s=settings) or Result())
    cfg = load_grid_config(None, ["--eval.exit_k", "1"], base=GRID)
    backend.evaluate(cfg, None, "d1", ["standard"], "2/255")
    assert seen["s"].exit_k == 1
    cell = eval_cells(cfg, train_cells(cfg)[0])[0]
    plain = load_grid_config(None, base=GRID)
    assert eval_fingerprint(plain, cell) != eval_fingerprint(cfg, cell)
    unset = {k: v for k, v in vars(plain.eval).items() if k not in ("attacks", "eps", "sweep_eps", "sweep_attack",
                                                                    "batch_size", "exit_k")}
    from advlora.experiments.grid import fingerprint

    assert eval_fingerprint(plain, cell) == fingerprint({"eval": unset, "attacks": cell.attacks, "eps": cell.eps,
                                                          "sanity": cell.sanity})     # as before the field
    with pytest.raises(AdvloraError, match="exit_k must be an integer"):
        load_grid_config(None, ["--eval.exit_k", "0"], base=GRID)


def test_the_main_table_reads_top1_on_a_classification_set():
    from advlora.experiments.report import table_rows

    def stat(v):
        return {"mean": v, "std": 0.0, "n": 1}

    def entry(clean, robust):
        return {"trainable": 10, "train_time_s": stat(1.0), "clean_n_images": 4,
                "clean": {k: stat(v) for k, v in clean.items()},
                "robust": {"pgd@1/255": {"attack": "pgd", "eps": "1/255", "metrics": {
                    k: stat(v) for k, v in robust.items()}}}}

    summary = {"seeds": [0], "datasets": ["c", "r"], "eval": {"steps": 10, "eps": ["1/255"], "attacks": ["pgd"]},
               "results": {
        "c": {"m": entry({"top1": 40.0, "r_mean": 70.0}, {"top1": 10.0, "r_mean": 50.0})},
        "r": {"m": entry({"r_mean": 60.0}, {"r_mean": 30.0})}}}
    assert table_rows(summary, "c")[1][0][3:] == ["40.0", "10.0"]
    assert table_rows(summary, "r")[1][0][3:] == ["60.0", "30.0"]


def test_a_train_cell_fingerprints_what_its_grid_sets_so_a_new_config_field_keeps_older_cells():
    """A cell of a grid written before ``trainable_alpha`` existed keeps its fingerprint (it resumes): the fingerprint
    is of the settings the grid names, never of the full config with every default (a field added at its default
    enters no cell's); a value the grid sets still changes it."""
    from advlora.adapters import AdapterConfig
    from advlora.experiments.grid import fingerprint
    from advlora.experiments.spec import run_config_dict

    methods = [{"label": "DoRA", "method": "dora", "adapter": {"rank": 4}}]
    cell = train_cells(load_grid_config(None, base={**GRID, "methods": methods}))[0]
    run = run_config_dict(load_grid_config(None, base={**GRID, "methods": methods}), cell)
    assert run["adapter"] == {"method": "dora", "rank": 4}                  # the grid's own fields, no defaults
    assert not AdapterConfig(method="dora", rank=4).trainable_alpha          # the field exists, default off
    alpha = [{**methods[0], "adapter": {"rank": 4, "trainable_alpha": True}}]
    cfg = load_grid_config(None, base={**GRID, "methods": alpha})
    assert fingerprint(run_config_dict(cfg, train_cells(cfg)[0])) != fingerprint(run)
