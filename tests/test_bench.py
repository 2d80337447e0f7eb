"""``advlora bench --size tiny`` runs and writes valid JSON with every ratio (a smoke test, not a benchmark)."""
import json
import math

from advlora.bench import TARGETS
from advlora.cli import main


def test_bench_tiny_writes_every_ratio(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["bench", "--size", "tiny", "--batch", "2", "--repeats", "1", "--retrieval-images", "200",
               "--retrieval-texts", "1000", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "bench.json").read_text())
    assert set(data["ratios"]) == set(TARGETS)
    for key, value in data["ratios"].items():
        assert math.isfinite(value) and value > 0, key
    assert data["details"]["full_trainable"] > data["details"]["advlora_trainable"] > 0
    printed = capsys.readouterr().out
    assert "p1_attack" in printed and "p6_eval_time" in printed


def test_bench_unknown_size_is_one_line(capsys):
    assert main(["bench", "--size", "huge"]) == 2
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
