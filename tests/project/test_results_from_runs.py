"""scripts/results_from_runs.py: a grid's summary.json and a bench --methods bench.json become one summary file of
docs/results/ that scripts/gen_results.py accepts and renders, the tables as the commands print them."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def stat(v):
    return {"mean": v, "std": 0.0, "n": 1}


def grid_summary() -> dict:
    """A summary.json shaped like ``collect``'s: two methods, PGD and Square at 4/255."""
    def robust(pgd, sq):
        return {"pgd@4/255": {"metrics": {"r_mean": stat(pgd)}, "clean_same_images": {"r_mean": stat(30.0)},
                              "attack": "pgd", "eps": "4/255", "threat": "linf eps=4/255 PGD steps=10",
                              "n_images": 200},
                "square@4/255": {"metrics": {"r_mean": stat(sq)}, "clean_same_images": {"r_mean": stat(51.5)},
                                 "attack": "square", "eps": "4/255", "threat": "linf eps=4/255 Square queries=100",
                                 "n_images": 32}}
    res = {"adv. LoRA": {"trainable": 20480, "train_time_s": stat(60.2), "clean": {"r_mean": stat(24.3)},
                         "clean_n_images": 200, "robust": robust(14.5, 52.3)},
           "adv. DoRA": {"trainable": 21760, "train_time_s": stat(88.8), "clean": {"r_mean": stat(25.1)},
                         "clean_n_images": 200, "robust": robust(15.2, 53.0)}}
    return {"datasets": ["emoji-downstream"], "seeds": [0],
            "eval": {"attacks": ["pgd", "square"], "eps": ["4/255"], "steps": 10},
            "results": {"emoji-downstream": res}}


def bench_result() -> dict:
    rows = [{"method": "lora", "declared": "lora", "options": {}, "trainable": 294912, "step_s": 1.0,
             "step_vs_lora": 1.0, "peak_gib": 1.2, "peak_vs_full": 0.5, "note": ""},
            {"method": "dora", "declared": "dora", "options": {}, "trainable": 313344, "step_s": 1.7,
             "step_vs_lora": 1.7, "peak_gib": 1.4, "peak_vs_full": 0.58, "note": "the norm of W + s B A"},
            {"method": "frozen", "declared": "frozen", "options": {}, "trainable": 0, "step_s": None,
             "step_vs_lora": None, "peak_gib": None, "peak_vs_full": None, "note": "trains nothing"}]
    return {"rows": rows, "config": {"size": "vit-b32", "batch": 16, "rank": 8, "repeats": 3, "warmup": 1},
            "slow_above": 1.5, "machine": {"platform": "x", "threads": 2, "cuda": False}, "wall_s": 10.0}


def test_runs_become_a_summary_file_gen_results_renders(tmp_path):
    gen, conv = _script("gen_results"), _script("results_from_runs")
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "summary.json").write_text(json.dumps(grid_summary()))
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bench.json").write_text(json.dumps({"methods": bench_result()}))
    out = tmp_path / "docs" / "grid-methods.json"
    out.parent.mkdir()
    argv = ["--id", "grid-methods", "--title", "methods", "--command", "advlora grid --config grid-methods",
            "--grid", str(tmp_path / "grid"), "--bench", str(tmp_path / "bench"), "--out", str(out),
            "--wall", "12 min"]
    assert conv.main(argv) == 0
    assert conv.main(argv) == 2                                                   # never overwritten unasked
    [s] = gen.load_summaries(out.parent)                                          # the keys gen_results requires
    main, cost = s["tables"]
    assert main["columns"] == ["method", "trainable", "train s", "clean (n=200)", "PGD-10", "Square (n=32)",
                               "clean (n=32)"]
    assert main["rows"][1] == ["adv. DoRA", "21.8k", "88.8", "25.1", "15.2", "53.0", "51.5"]
    assert main["caption"].startswith("r_mean (%) on emoji-downstream (test, 200 images; Square on 32)")
    assert cost["rows"][1] == ["dora", "313,344", "1.700", "1.70", "1.40", "0.58", "the norm of W + s B A"]
    assert cost["rows"][2][2:6] == ["-"] * 4 and "vit-b32" in cost["caption"]
    assert s["wall"] == "12 min" and s["machine"]["threads"] == "not recorded" and len(s["threat_models"]) == 2
    page = gen.render_results([s])
    assert "| adv. DoRA | 21.8k | 88.8 | 25.1 | 15.2 | 53.0 | 51.5 |" in page
