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
