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


def _class_folder(root):
    """Three classes of two random images: a classification set for the transfer table."""
    from PIL import Image

    g = torch.Generator().manual_seed(1)
    for c in ("apple", "river", "stone"):
        (root / c).mkdir(parents=True)
        for k in range(2):
            pixels = (torch.rand(12, 12, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / c / f"{k}.png")
    (root / "templates.txt").write_text("{}\n")
    return root


def test_demo_smoke(tmp_path, image_text_folder, capsys, one_thread):
    out = tmp_path / "demo"
    cls = _class_folder(tmp_path / "cls")
    argv = ["demo", "--tiny-test", "--data", str(image_text_folder), "--forgetting-data", str(image_text_folder),
            "--transfer-data", str(cls), "--out", str(out)]
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
    # laid out as a results section: verdict, claims, headline table; how it was run comes last
    assert (md.index("**Sanity verdict") < md.index("**Claim 1:") < md.index("## Results")
            < md.index("## Sanity checks"))
    assert md.index("## How this was run") > md.index("## Plots")
    assert "Learning rates" in md.split("## How this was run")[1]
    # the forgetting evaluation: every method on the second data set, clean and under PGD at the demo eps
    assert list(s["forgetting"]) == METHODS and "forgetting:" in printed and "Forgetting" in md
    for r in s["forgetting"].values():
        assert 0 <= r["robust"] <= r["clean"] + 1e-6 <= 100 + 1e-6
    # the transfer table: the set adapted to, the forgetting set and the classification set, per method
    assert set(s["transfer"]) == {str(image_text_folder), str(cls)} and "transfer:" in printed and "Transfer" in md
    assert list(s["transfer"][str(cls)]) == METHODS and "top1 clean" in printed
    for r in s["transfer"][str(cls)].values():
        assert r["metric"] == "top1" and 0 <= r["robust"] <= r["clean"] + 1e-6 <= 100 + 1e-6
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
