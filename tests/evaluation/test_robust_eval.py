"""Robust retrieval evaluation and the attack/eval CLI: robust <= clean, ensemble, subsets, sanity lines,
run folders, and one-line errors with exit status 2."""
import json

import pytest
import torch

from advlora.attacks import ThreatModel
from advlora.data import load_dataset
from advlora.errors import AdvloraError
from advlora.evaluation.robust import evaluate_robust
from advlora.evaluation.sanity import chance_r_mean, check_monotone
from advlora.metrics import METRIC_KEYS

WORDS = "red blue green cat dog house tree car apple sun moon star boat fish bird".split()


@pytest.fixture(scope="module")
def word_folder(tmp_path_factory):
    """8 random images with two distinct word captions each (the tiny tokenizer merges digits)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("words")
    g = torch.Generator().manual_seed(0)
    recs = []
    for i in range(8):
        arr = (torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(d / f"img{i}.png")
        recs.append({"image": f"img{i}.png", "captions": [f"{WORDS[i]} {WORDS[(i + 3) % 15]}",
                                                          f"a {WORDS[(i + 5) % 15]} and {WORDS[i]}"]})
    (d / "ann.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return d / "ann.jsonl"


@pytest.fixture
def data(word_folder):
    return load_dataset(str(word_folder))


def test_robust_never_exceeds_clean_and_reports_everything(tiny_clip, data):
    tiny_clip.train()
    th = ThreatModel(eps="8/255", steps=2)
    out = evaluate_robust(tiny_clip, data, ["fgsm", "pgd", "apgd"], th, ensemble=True, sanity_limit=4)
    assert tiny_clip.training  # mode restored
    tiny_clip.eval()
    assert set(out["attacks"]) == {"fgsm", "pgd", "apgd"}
    for name, e in out["attacks"].items():
        assert e["threat"].startswith("linf eps=8/255")
        for k in METRIC_KEYS:
            assert e["metrics"][k] <= e["clean"][k] + 1e-9, (name, k)
        assert set(e["asr"]) == {"i2t", "t2i"}
        assert e["checks"]["max_perturbation"] <= 8 / 255 + 1e-6 and e["checks"]["eval_mode_during"]
    assert out["attacks"]["pgd"]["metrics"]["r_mean"] < out["clean"]["r_mean"]
    ens = out["ensemble"]["metrics"]
    for name in ("fgsm", "pgd", "apgd"):  # per-image worst case: i2t never better than any member
        for k in ("i2t_r1", "i2t_r5", "i2t_r10"):
            assert ens[k] <= out["attacks"][name]["metrics"][k] + 1e-9
    lines = [str(c) for c in out["sanity"]]
    assert all(s.startswith(("PASS ", "WARN ")) for s in lines)
    text = "\n".join(lines)
    for needle in ("robust <= clean", "linf ball", "eval mode", "gradients non-zero", "steps x2", "restarts x2",
                   "eps=0.5", "mode restored"):
        assert needle in text, needle


def test_square_on_a_subset_text_and_joint(tiny_clip, data):
    th = ThreatModel(eps="8/255", steps=2)
    out = evaluate_robust(tiny_clip, data, ["square", "text", "joint", "fgsm"], th, square_limit=3,
                          square_queries=10, text_budget=1, sanity=False)
    sq = out["attacks"]["square"]
    assert sq["n_images"] == 3 and "subset" in sq and "Square queries=10" in sq["threat"]
    assert sq["whitebox_on_subset"]["attack"] == "fgsm"   # the masking check compares on the same images
    assert out["attacks"]["text"]["threat"].startswith("text char-edits<=1")
    assert out["attacks"]["text"]["metrics"]["r_mean"] <= out["clean"]["r_mean"] + 1e-9
    assert "Co-Attack" in out["attacks"]["joint"]["threat"]
    assert "sanity" not in out


def test_bad_names(tiny_clip, data):
    th = ThreatModel()
    with pytest.raises(AdvloraError, match="unknown attack 'pdg'.*valid: apgd, apgd-margin, apgd-t, fgsm"):
        evaluate_robust(tiny_clip, data, ["pdg"], th)
    with pytest.raises(AdvloraError, match="unknown objective 'kl'"):
        evaluate_robust(tiny_clip, data, ["pgd"], th, objective="kl")
    with pytest.raises(AdvloraError, match="ITM head"):
        evaluate_robust(tiny_clip, data, ["pgd"], th, objective="itm")
    with pytest.raises(AdvloraError, match="surrogate"):
        evaluate_robust(tiny_clip, data, ["transfer"], th, sanity=False)


def test_square_gradient_masking_check():
    from advlora.evaluation.sanity import check_square

    m = lambda r: {"metrics": {"r_mean": r}}  # noqa: E731
    assert str(check_square({"attacks": {"pgd": m(30.0), "square": m(29.0)}})[0]).startswith("PASS")
    line = str(check_square({"attacks": {"pgd": m(30.0), "square": m(20.0)}})[0])
    assert line.startswith("WARN") and "gradient masking" in line
    sub = {"attacks": {"pgd": m(5.0), "square": {**m(20.0), "subset": "3 of 8 images",
                                                 "whitebox_on_subset": {"attack": "pgd", **m(25.0)}}}}
    assert str(check_square(sub)[0]).startswith("WARN") and "same" not in check_square({"attacks": {}})


def test_chance_and_monotone():
    # 2 images, 1 caption each: i2t R@1 = 1/2, R@5 = R@10 = 1; same for t2i
    assert chance_r_mean(torch.tensor([0, 1]), 2) == pytest.approx(100 * (0.5 + 1 + 1) * 2 / 6)
    assert str(check_monotone([(1 / 255, 40.0), (2 / 255, 30.0), (4 / 255, 30.0)])).startswith("PASS")
    assert str(check_monotone([(1 / 255, 40.0), (2 / 255, 45.0)], "pgd")).startswith("WARN pgd:")


@pytest.fixture(scope="module")
def saved_clip(tmp_path_factory, tiny_clip):
    from advlora.models import save_model

    d = tmp_path_factory.mktemp("clip")
    save_model(tiny_clip, d)
    return d


def test_cli_attack_and_eval_write_run_folders(saved_clip, word_folder, tmp_path, capsys):
    image_text_folder = word_folder
    from advlora.cli import main

    out = tmp_path / "att"
    assert main(["attack", "--model", str(saved_clip), "--data", str(image_text_folder), "--attack", "pgd",
                 "--eps", "4/255", "--attack-steps", "1", "--out", str(out), "--sanity-limit", "2"]) == 0
    printed = capsys.readouterr().out
    assert "linf eps=4/255 PGD steps=1 step=10/255 restarts=1 random-start" in printed and "PASS" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert "pgd@4/255" in m["robust"] and m["sanity"] and (out / "config.yaml").exists()
    assert (out / "manifest.json").exists()
    out2 = tmp_path / "ev"
    assert main(["eval", "--model", str(saved_clip), "--data", str(image_text_folder), "--attacks", "fgsm,pgd",
                 "--eps", "2/255,8/255", "--attack-steps", "1", "--out", str(out2), "--no-sanity"]) == 0
    m = json.loads((out2 / "metrics.json").read_text())
    assert set(m["robust"]) == {"fgsm@2/255", "pgd@2/255", "fgsm@8/255", "pgd@8/255"}
    assert m["robust"]["pgd@8/255"]["threat"].startswith("linf eps=8/255")


@pytest.mark.parametrize("argv,msg", [
    (["--attack", "pdg"], "unknown attack 'pdg'"),
    (["--eps", "4//255"], "malformed eps"),
    (["--eps=-1/255"], "eps must be >= 0"),
    (["--attack-steps", "0"], "steps must be an integer >= 1"),
    (["--norm", "l3"], "unknown norm 'l3'"),
])
def test_cli_bad_input_exits_2(argv, msg, image_text_folder, tmp_path, capsys):
    from advlora.cli import main

    assert main(["attack", "--model", "tiny-clip", "--data", str(image_text_folder), "--out", str(tmp_path / "x"),
                 *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_eval_bad_attack_list_exits_2(image_text_folder, capsys):
    from advlora.cli import main

    assert main(["eval", "--data", str(image_text_folder), "--attacks", "fgsm,pgd,autoattack"]) == 2
    assert "unknown attack 'autoattack'" in capsys.readouterr().err
