"""``advlora adapter`` info / init / merge on a random test-sized CLIP."""
from __future__ import annotations

from advlora.cli import main


def test_info_all_methods(capsys):
    assert main(["adapter", "info", "--random-model", "clip:test", "--method", "all", "--rank", "2", "--layers"]) == 0
    out = capsys.readouterr().out
    from advlora.adapters import method as adapter_methods

    assert {"frozen", "full", "lora", "pissa", "advlora", "dora", "vera", "ia3"} <= set(adapter_methods.choices())
    for method in adapter_methods.choices():
        assert f"\n{method} " in out
    assert "alignment error" in out and "vision_model.encoder.layers.0.self_attn.q_proj" in out


def test_init_then_merge(tmp_path, capsys):
    ad, merged = tmp_path / "ad", tmp_path / "merged"
    assert main(["adapter", "init", "--random-model", "clip:test", "--method", "advlora", "--rank", "2",
                 "--out", str(ad)]) == 0
    assert (ad / "adapter_config.json").exists() and (ad / "advlora_state.safetensors").exists()
    assert main(["adapter", "merge", "--random-model", "clip:test", "--adapter", str(ad), "--out", str(merged)]) == 0
    assert (merged / "config.json").exists()


def test_bad_input_exit_2(tmp_path, capsys):
    assert main(["adapter", "info", "--random-model", "clip:test", "--method", "adalora"]) == 2
    assert main(["adapter", "info", "--random-model", "clip:test", "--targets", "nope"]) == 2
    assert main(["adapter", "info", "--random-model", "clip:test", "--rank", "99"]) == 2
    assert main(["adapter", "merge", "--random-model", "clip:test", "--adapter", str(tmp_path), "--out",
                 str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("advlora adapter: error:") for line in err)
