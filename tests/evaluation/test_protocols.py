"""Evaluation protocols (``advlora.evaluation.protocols``, ``advlora eval --protocol``): each preset sets the
knobs it declares, ``advlora list protocols`` shows them, every results file names the protocol it followed
(or ``custom``), a user's YAML preset loads, and a bad name is one line before any work."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
from PIL import Image

from advlora.attacks import parse_eps_list
from advlora.cli import attack as attack_cli
from advlora.cli import eval as eval_cli
from advlora.cli import main
from advlora.cli.attack import apply_protocol, robust_options
from advlora.errors import AdvloraError
from advlora.evaluation.protocols import PROTOCOLS, load_protocol


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    eval_cli.add_arguments(p)
    return p.parse_args(list(argv))


def _built(*argv: str):
    """The settings and threat models ``advlora eval`` builds from ``argv`` (no model, no data, no attack)."""
    args = _args(*argv)
    apply_protocol(args, eval_cli.add_arguments)
    attacks = [a for a in args.attacks.split(",") if a] if args.attacks else []
    return args, *robust_options(args, attacks)


@pytest.mark.parametrize("name,attacks,eps,steps,step", [
    ("robustvlm", ["apgd", "apgd-t", "square"], ["1/255", "2/255", "4/255"], 100, None),
    ("tecoa", ["pgd"], ["1/255"], 100, 1 / 255),
    ("fewshot", ["pgd"], ["1/255"], 100, 1 / 255),
])
def test_preset_sets_each_knob_it_declares(name, attacks, eps, steps, step):
    args, settings, threats = _built("--protocol", name)
    assert settings.attacks == attacks
    assert [t.eps_text for t in threats] == eps and all(t.norm == "linf" for t in threats)
    assert all(t.steps == steps and t.restarts == 1 for t in threats)
    if step is not None:
        assert all(t.step == pytest.approx(step) for t in threats)
    declared = PROTOCOLS.get(name)
    assert args.limit == declared.limit and settings.ensemble == bool(declared.ensemble)
    assert settings.protocol == {"name": name, "settings": declared.settings(), "overrides": {}}


def test_robustvlm_records_what_it_does_not_apply():
    s = PROTOCOLS.get("robustvlm").settings()
    assert s["limit"] == 1000 and s["logit_scale"] == 100.0 and s["ensemble"] is True
    assert PROTOCOLS.get("fewshot").settings()["shots"] == [1, 2, 4, 8, 16]
    assert PROTOCOLS.get("fewshot").settings()["seeds"] == [1, 2, 3]


def test_robustvlm_fixes_the_attacks_logit_scale_at_100():
    _, settings, _ = _built("--protocol", "robustvlm")
    assert settings.logit_scale == 100.0
    assert _built("--protocol", "tecoa")[1].logit_scale is None       # the others attack the model's own logits
    assert _built("--attacks", "pgd")[1].logit_scale is None


def test_the_cross_entropy_objective_scores_the_fixed_logits(tiny_clip, image_text_folder):
    """The objective an attack maximises under ``--logit-scale 100`` is CE(100 x cosine), not CE(the model's
    scale x cosine): the two differ on a model whose own scale is not 100."""
    from advlora.attacks import objectives as O
    from advlora.data import load_dataset
    from advlora.evaluation.measure import context, positives
    from advlora.evaluation.runners import objective_for

    data = load_dataset(str(image_text_folder))
    own = float(tiny_clip.logit_scale.detach())
    assert abs(own - 100.0) > 1.0
    idx = torch.arange(len(data))
    for scale, want_scale in ((100.0, 100.0), (None, own)):
        ctx = context(tiny_clip, data, 0, scale)
        x = ctx.images.rows(idx).to(tiny_clip.device)
        with torch.no_grad():
            got = objective_for("contrastive", ctx, idx, x, "full")(x)
            want = O.multi_positive_ce(want_scale * tiny_clip.encode_image(x) @ ctx.text_features.t(),
                                       positives(data, idx))
        torch.testing.assert_close(got, want)


def test_a_robustvlm_result_records_the_scale_it_attacked_with(cls_set, tmp_path):
    model, data = cls_set
    out = tmp_path / "r"
    assert main(["eval", "--model", str(model), "--data", str(data), "--protocol", "robustvlm", "--attacks", "apgd",
                 "--attack-steps", "2", "--eps", "1/255", "--no-sanity", "--out", str(out)]) == 0
    run = json.loads((out / "metrics.json").read_text())["runs"][0]
    assert run["logit_scale"] == 100.0 and "logits=100*cos" in run["attacks"]["apgd"]["threat"]
    rec = _records(out)[0]
    assert rec["protocol"]["name"] == "robustvlm" and "--logit-scale" not in rec["protocol"]["overrides"]


def test_a_flag_given_over_the_preset_overrides_it_with_a_note(capsys):
    args, settings, threats = _built("--protocol", "tecoa", "--attack-steps", "3", "--eps", "2/255")
    assert [t.steps for t in threats] == [3] and [t.eps_text for t in threats] == ["2/255"]
    assert settings.protocol["name"] == "tecoa"
    assert settings.protocol["overrides"] == {"--attack-steps": 3, "--eps": "2/255"}
    err = capsys.readouterr().err
    assert "--attack-steps 3 overrides the preset's 100" in err and "--eps 2/255" in err


def test_attack_command_takes_the_preset_too(capsys):
    p = argparse.ArgumentParser()
    attack_cli.add_arguments(p)
    args = p.parse_args(["--protocol", "robustvlm"])
    apply_protocol(args, attack_cli.add_arguments, attacks=("attack", "--attack"))
    settings, threats = robust_options(args, args.attack.split(","))
    assert settings.attacks == ["apgd", "apgd-t", "square"] and [t.steps for t in threats] == [100] * 3
    args = p.parse_args(["--protocol", "tecoa", "--attack", "fgsm"])
    apply_protocol(args, attack_cli.add_arguments, attacks=("attack", "--attack"))
    assert args.attack == "fgsm" and args.protocol_record["overrides"] == {"--attack": "fgsm"}
    assert "--attack fgsm overrides the preset's pgd" in capsys.readouterr().err


def test_without_protocol_the_run_is_custom():
    _, settings, threats = _built("--attacks", "pgd")
    assert settings.protocol["name"] == "custom" and [t.steps for t in threats] == [10]


def test_list_protocols_shows_each_with_its_settings(capsys):
    assert main(["list", "protocols"]) == 0
    out = capsys.readouterr().out
    for name in ("robustvlm", "tecoa", "fewshot"):
        line = next(ln for ln in out.splitlines() if ln.startswith(name))
        assert "steps 100" in line and "attacks" in line
    assert "step_size 1/255" in next(ln for ln in out.splitlines() if ln.startswith("tecoa"))
    assert "shots 1,2,4,8,16" in out and "logit_scale 100" in out


def test_user_yaml_preset_loads(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("doc: my lab's check\nattacks: [pgd, apgd]\neps: [2/255, 8/255]\nsteps: 20\nstep_size: 1/255\n")
    p = load_protocol(str(f))
    assert p.name == "mine" and p.attacks == ("pgd", "apgd") and p.steps == 20
    _, settings, threats = _built("--protocol", str(f))
    assert settings.attacks == ["pgd", "apgd"] and [t.eps_text for t in threats] == ["2/255", "8/255"]
    assert all(t.steps == 20 for t in threats) and settings.protocol["name"] == "mine"
    (tmp_path / "bad.yaml").write_text("attacks: [pgd]\niterations: 5\n")
    with pytest.raises(AdvloraError, match="unknown field.*iterations"):
        load_protocol(str(tmp_path / "bad.yaml"))


def test_bad_protocol_is_one_line_exit_2_before_any_work(tmp_path, capsys):
    # --data names a missing set: its own error would come first if the data were checked before the protocol
    assert main(["eval", "--protocol", "robustvlmm", "--data", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown protocol 'robustvlmm'" in err[0] and "robustvlm" in err[0]
    assert not (tmp_path / "o").exists()
    assert main(["eval", "--protocol", str(tmp_path / "none.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.fixture
def cls_set(tmp_path, tiny_clip):
    from advlora.models import save_model

    g = torch.Generator().manual_seed(0)
    for c in ("apple", "river", "stone"):
        d = tmp_path / "cls" / "test" / c
        d.mkdir(parents=True)
        for k in range(2):
            Image.fromarray((torch.rand(12, 12, 3, generator=g) * 255).to(torch.uint8).numpy()).save(d / f"{k}.png")
    save_model(tiny_clip, tmp_path / "model")
    return tmp_path / "model", tmp_path / "cls"


def _records(out):
    files = sorted((out / "results").rglob("*.json"))
    assert files
    return [json.loads(f.read_text()) for f in files]


def test_results_files_name_the_protocol_or_custom(cls_set, tmp_path):
    from advlora.evaluation.sweep import check_record

    model, data = cls_set
    # tecoa at its declared 100 steps would take seconds per image on CPU; 2 steps (an override, recorded)
    # exercise the same path
    out = tmp_path / "p"
    assert main(["eval", "--model", str(model), "--data", str(data), "--protocol", "tecoa", "--attack-steps", "2",
                 "--no-sanity", "--out", str(out)]) == 0
    for rec in _records(out):
        assert check_record(rec) == []
        assert rec["protocol"]["name"] == "tecoa" and rec["protocol"]["overrides"] == {"--attack-steps": 2}
        assert rec["protocol"]["settings"]["step_size"] == "1/255" and rec["threat"]["eps_str"] == "1/255"
        assert rec["threat"]["step_size"] == pytest.approx(parse_eps_list("1/255")[0])
    out = tmp_path / "c"
    assert main(["eval", "--model", str(model), "--data", str(data), "--attacks", "pgd", "--attack-steps", "2",
                 "--no-sanity", "--out", str(out)]) == 0
    assert [r["protocol"]["name"] for r in _records(out)] == ["custom"]
    out = tmp_path / "clean"
    assert main(["eval", "--model", str(model), "--data", str(data), "--out", str(out)]) == 0
    assert [r["protocol"]["name"] for r in _records(out)] == ["custom"]
