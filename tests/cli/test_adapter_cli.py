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


def test_info_reports_only_the_config_fields_a_method_reads(tmp_path, capsys):
    """``adapter_info`` and ``adapter info --adapter`` show rank and towers where the method's declaration reads
    them (lora: both; ia3 and full: towers; coop: neither) and never a field it ignores."""
    from advlora.adapters import adapter_info, attach_adapter, save_adapter
    from advlora.adapters import method as adapter_methods
    from advlora.models.tiny import random_model

    want = {"lora": {"rank", "towers"}, "ia3": {"towers"}, "full": {"towers"}, "coop": set()}
    for method, shown in want.items():
        model = attach_adapter(random_model("clip", "test", seed=0), method, rank=2)
        info = adapter_info(model)
        assert {k for k in ("rank", "towers") if k in info} == shown, method
        config = {k for k in info if k not in ("method", "trainable", "total", "share", "layers")}
        assert config <= set(adapter_methods.get(method).reads), (method, config)
        save_adapter(model, tmp_path / method)
        capsys.readouterr()
        assert main(["adapter", "info", "--random-model", "clip:test", "--adapter", str(tmp_path / method)]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("method "))
        assert "None" not in line and ("rank 2" in line) == ("rank" in shown), line
        assert ("towers both" in line) == ("towers" in shown), line
    for name in adapter_methods.choices():     # every method and alias: config fields it reads, by their names
        info = adapter_info(attach_adapter(random_model("clip", "test", seed=0), name, rank=2, use_rslora=True)
                            if name == "lora" else attach_adapter(random_model("clip", "test", seed=0), name, rank=2))
        config = {k for k in info if k not in ("method", "trainable", "total", "share", "layers")}
        assert config <= set(adapter_methods.get(name).reads), (name, config)
