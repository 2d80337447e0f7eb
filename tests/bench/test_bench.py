"""``advlora bench --random-model clip:tiny`` runs and writes valid JSON with every ratio (a smoke test, not a
benchmark)."""
import json
import math

import pytest

from advlora.bench import TARGETS
from advlora.cli import main


def test_bench_tiny_writes_every_ratio(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["bench", "--random-model", "clip:tiny", "--batch-size", "2", "--repeats", "1",
               "--retrieval-images", "200", "--retrieval-texts", "1000", "--suite-images", "4",
               "--autoattack-images", "0", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "bench.json").read_text())
    assert set(data["ratios"]) == set(TARGETS) - {"p8_vs_autoattack", "p8_exit10_vs_autoattack"}   # reduction skipped
    for key, value in data["ratios"].items():
        assert math.isfinite(value) and value > 0, key
    assert data["details"]["full_trainable"] > data["details"]["advlora_trainable"] > 0
    printed = capsys.readouterr().out
    assert "p1_attack" in printed and "p6_eval_time" in printed and "p7_suite_vs_members" in printed
    assert "AutoAttack reduction: not run" in printed


def test_bench_unknown_size_is_one_line(capsys):
    assert main(["bench", "--random-model", "clip:huge"]) == 2
    assert "unknown bench size 'huge'" in capsys.readouterr().err


def test_data_bench_pieces_measure_a_tiny_photo_set(tmp_path):
    """The pieces of ``advlora bench --data`` on 40 photos, in this process (the bench runs them in fresh ones)."""
    from advlora.bench.data_case import first_step, format_data_bench, photo_set, throughput

    ann = photo_set(40, tmp_path / "photos")
    assert len(list((tmp_path / "photos").glob("*.jpg"))) == 40
    first = first_step(str(ann))
    assert first["images"] == 40 and first["seconds"] > 0 and first["peak_bytes"] >= 0
    flow = {w: throughput(str(ann), w, 2) for w in (1, 2)}
    assert all(f["images_per_s"] > 0 and 0 <= f["wait_share"] <= 1 for f in flow.values())
    result = {"sizes": [20, 40], "first_step": {20: first, 40: first}, "throughput": flow, "lo": 20, "hi": 40,
              "ratios": {"memory_ratio": 1.0, "first_step_ratio": 1.0, "decode_2_vs_1_workers": 1.0},
              "met": {"memory_ratio": True, "first_step_ratio": True}}
    text = format_data_bench(result)
    assert "memory(40) / (20) = 1.000 (target <= 1.1; met: yes)" in text and "with 2" in text


def _tiny_eval_args(ann) -> tuple[str, ...]:
    return ("--data", str(ann), "--attacks", "pgd", "--eps", "2/255", "--attack-steps", "2", "--no-sanity",
            "--batch-size", "3")


# slow: four Python start-ups of advlora eval (tests/evaluation/test_distributed_eval.py checks torchrun eval in
# every run)
@pytest.mark.slow
def test_distributed_eval_figure_two_processes_equal_one(tmp_path):
    """The bench's torchrun-vs-one-process figure on 6 images and PGD-2: same ranks, a finite wall ratio."""
    from train_utils import save_test_model, write_data

    from advlora.bench.dist_eval import format_distributed_eval, measure_distributed_eval

    ann = write_data(tmp_path / "data", n=6)
    model = save_test_model(tmp_path / "model")
    result = measure_distributed_eval(tmp_path / "work", eval_args=_tiny_eval_args(ann), model=str(model))
    assert result["status"] == "ok", result.get("reason")
    assert result["identical"] and result["differences"] == [] and result["keys"] == ["pgd@2/255"]
    assert result["n_images"] == 6 and math.isfinite(result["wall_ratio"]) and result["wall_ratio"] > 0
    assert all((tmp_path / "work" / f"{k}-round0" / "metrics.json").is_file() for k in ("1x2", "2x1", "1x1"))
    line = format_distributed_eval(result)
    assert "\n" not in line and "per-sample ranks identical (pgd@2/255; 6 images, 12 captions, " in line
    assert f"1 process x 2 threads: wall {result['wall_ratio']:.2f} (" in line


def test_distributed_eval_comparison_finds_a_differing_rank():
    from advlora.bench.dist_eval import compare_results

    one = {"clean": {"r_mean": 1.0}, "robust": {"pgd@2/255": {"ranks": {"i2t": [0, 3, 1], "t2i": [2, 2]},
                                                              "metrics": {"r_mean": 0.5}}}}
    two = json.loads(json.dumps(one))
    assert compare_results(one, two) == []
    two["robust"]["pgd@2/255"]["ranks"]["i2t"][1] = 4
    assert compare_results(one, two) == ["pgd@2/255: 1 of 3 image ranks differ"]


def test_distributed_eval_without_torchrun_or_with_a_failed_launch_is_one_line(tmp_path, monkeypatch):
    from advlora.bench import dist_eval

    missing = ("--data", str(tmp_path / "nothing.jsonl"), "--attacks", "pgd")
    failed = dist_eval.measure_distributed_eval(tmp_path, eval_args=missing, model=str(tmp_path))
    line = dist_eval.format_distributed_eval(failed)
    assert failed["status"] == "failed" and "\n" not in line
    assert line.startswith("distributed evaluation 2 vs 1 processes: launch failed: 1 process x 2 threads exited "
                           "2: advlora eval: error: ") and "nothing.jsonl" in line
    monkeypatch.setattr(dist_eval, "find_torchrun", lambda: None)
    absent = dist_eval.measure_distributed_eval(tmp_path, eval_args=missing)
    assert dist_eval.format_distributed_eval(absent) == ("distributed evaluation 2 vs 1 processes: not measured: "
                                                         "torchrun not found (next to python or on PATH)")
