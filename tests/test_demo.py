"""advlora demo, end to end on a random test-size CLIP and six images: the plumbing, in seconds."""
from __future__ import annotations

import json

import pytest
import torch

from advlora.cli import main

METHODS = ["zero-shot", "clean full FT", "clean LoRA", "adv. full FT", "adv. LoRA", "AdvLoRA"]


@pytest.fixture
def one_thread():
    """A test-size model gains nothing from intra-op threads, and they thrash on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_demo_smoke(tmp_path, image_text_folder, capsys, one_thread):
    out = tmp_path / "demo"
    argv = ["demo", "--tiny-test", "--data", str(image_text_folder), "--forgetting-data", str(image_text_folder),
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for label in METHODS:
        assert label in printed
    assert "threat models" in printed and "linf" in printed
    s = json.loads((out / "summary.json").read_text())
    assert list(s["methods"]) == METHODS
    for label, m in s["methods"].items():
        assert {"fgsm@4/255", "pgd@4/255", "square@4/255", "pgd@8/255"} <= set(m["robust"]), label
        for r in m["robust"].values():
            # an attack never improves on the clean score of the same images
            assert r["r_mean"] <= r["clean_r_mean_same_images"] + 1e-6
        assert m["train_time_s"] is not None
    assert s["methods"]["zero-shot"]["trainable"] == 0
    assert 0 < s["methods"]["AdvLoRA"]["trainable"] < s["methods"]["adv. full FT"]["trainable"]
    for f in ("report.md", "report.html", "plots/robust_vs_eps.png", "plots/clean_vs_robust.png",
              "plots/alpha_trajectories.png", "plots/training_curves.png"):
        assert (out / f).is_file(), f
    md = (out / "report.md").read_text()
    assert "Sanity checks" in md and "Threat models" in md
    # the forgetting evaluation: every method on the second data set, clean and under PGD at the demo eps
    assert list(s["forgetting"]) == METHODS and "forgetting:" in printed and "Forgetting" in md
    for r in s["forgetting"].values():
        assert 0 <= r["robust"] <= r["clean"] + 1e-6 <= 100 + 1e-6
    # the paper's three claims, each with a verdict, in the report and on the terminal
    for k in (1, 2, 3):
        assert f"Claim {k}:" in printed and f"**Claim {k}:" in md
    # run again: every cell is complete, nothing is trained or evaluated again: no cell's marker or result is
    # written anew (read from the files, not from a clock)
    results = ("COMPLETE", "train.json", "metrics.json")
    written = {f: f.stat().st_mtime_ns for f in (out / "cells").rglob("*") if f.name in results}
    assert sum(f.name == "COMPLETE" for f in written) >= len(METHODS)
    assert main(argv) == 0
    assert {f: f.stat().st_mtime_ns for f in (out / "cells").rglob("*") if f.name in results} == written
    again = json.loads((out / "summary.json").read_text())
    assert {m: r["clean"] for m, r in again["methods"].items()} == {m: r["clean"] for m, r in s["methods"].items()}
