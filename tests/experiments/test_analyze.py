"""advlora analyze: effective ranks of weight updates and alpha statistics."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from advlora.errors import AdvloraError
from advlora.experiments import spectrum as S
from advlora.experiments.analyze import analyze, find_runs


def test_effective_rank_definitions():
    assert S.effective_rank(torch.ones(7)) == pytest.approx(7.0)
    assert S.effective_rank(torch.tensor([3.0, 0, 0])) == pytest.approx(1.0)
    assert S.effective_rank(torch.zeros(4)) == 0.0
    # energies 16, 4, 1 of 21: the top one holds 76%, two hold 95%
    s = torch.tensor([4.0, 2.0, 1.0])
    assert S.energy_rank(s, 0.7) == 1 and S.energy_rank(s, 0.9) == 2 and S.energy_rank(s, 0.99) == 3
    assert S.energy_at(s, 2) == pytest.approx(20 / 21)


def test_low_rank_update_is_found():
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(48, 32, generator=g)
    low = w0 + torch.randn(48, 3, generator=g) @ torch.randn(3, 32, generator=g)
    full = w0 + 0.1 * torch.randn(48, 32, generator=g)
    a, b = S.layer_stats(w0, low), S.layer_stats(w0, full)
    assert a["rank_99"] <= 3 and a["effective_rank"] <= 3.0 and a["energy_at_rank"]["4"] == pytest.approx(1.0)
    assert b["rank_90"] > 10 and b["effective_rank"] > 20
    assert S.update_spectra({"x": w0, "y": w0}, {"x": low, "y": w0.clone()}).keys() == {"x"}


def test_alpha_stats_drift():
    st = S.alpha_stats([1, 2, 3], {"a": [1.0, 1.2, 1.5], "b": [1.0, 0.9, 0.7]})
    assert st["final"]["max"] == 1.5 and st["final"]["min"] == 0.7
    assert st["drift"]["max_abs"] == pytest.approx(0.5) and st["drift"]["mean"] == pytest.approx(0.1)
    assert st["largest_step_change"] == pytest.approx(0.3) and st["finite"]


@pytest.fixture
def fake_run(tmp_path, tiny_clip):
    run = tmp_path / "grid" / "cells" / "emoji" / "adv-full-ft" / "seed0" / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model: {name: tiny-clip}\nadapter: {method: advlora}\n")
    (run / "history.csv").write_text("step,loss,alpha/vision_model.q,alpha/text_model.q\n1,2,1.0,1.0\n2,1,1.1,0.95\n")
    tuned = copy.deepcopy(tiny_clip)
    g = torch.Generator().manual_seed(1)
    q = tuned.hf_model.vision_model.encoder.layers[0].self_attn.q_proj
    q.weight.data += torch.randn(q.weight.shape[0], 2, generator=g) @ torch.randn(2, q.weight.shape[1], generator=g)
    return tmp_path / "grid", (tiny_clip, tuned)


def test_analyze_writes_report(fake_run):
    root, models = fake_run
    results, text, out = analyze(root, model_loader=lambda run: models)
    (label, res), = results.items()
    assert label == "adv-full-ft/seed0"
    (name, st), = res["spectra"].items()  # only the layer that changed
    assert name.endswith("layers.0.self_attn.q_proj") and st["rank_99"] == 2
    assert res["alpha"]["final"]["mean"] == pytest.approx(1.025)
    assert "effective rank" in text and "alpha" in text
    for f in ("report.md", "report.html", "analysis.json"):
        assert (out / f).is_file()
    assert len(list((out / "plots").glob("*.png"))) == 2
    saved = json.loads((out / "analysis.json").read_text())
    assert saved[label]["spectrum_summary"]["layers"] == 1


def test_analyze_bad_folder(tmp_path, capsys):
    with pytest.raises(AdvloraError, match="no such run folder"):
        find_runs(tmp_path / "nope")
    from advlora.cli import main

    assert main(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither a training run folder" in err[0]
