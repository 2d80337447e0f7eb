"""The sanity checks at least as strict as AutoAttack's ``checks.py``, each on the case it is built for: a model
randomized on one call in three, Square breaking one image in 12 alone or pushing one past the exit rank, FGSM
beating the iterative attack, probabilities and constant scores, a NaN adversarial image; and ``--norm l2``
with a suite that holds an attack declared for linf only refused before any work."""
from __future__ import annotations

import copy
import json
import types

import pytest
import torch

from advlora.attacks import ThreatModel, fgsm, registry
from advlora.attacks.registry import AttackSpec, SuiteMember
from advlora.cli import main
from advlora.errors import AdvloraError
from advlora.evaluation.probes import RANDOM_TOL, check_randomized, is_randomized
from advlora.evaluation.robust import evaluate_robust
from advlora.evaluation.sanity import (
    Outcomes,
    check_black_vs_white,
    check_fgsm_vs_iterative,
    check_output_range,
    run_checks,
)


def _every_third_call_noisy(model, size: float = 1e-2):
    """``model`` whose image features move by ``size`` on every third call only (a defense randomized now and
    then): two calls agree, five do not."""
    m = copy.deepcopy(model)
    plain, calls = m.encode_image, [0]

    def encode_image(self, x, normalize=True):
        calls[0] += 1
        f = plain(x, normalize)
        return f + size * torch.randn_like(f) if calls[0] % 3 == 0 else f

    m.encode_image = types.MethodType(encode_image, m)
    return m, calls


def test_the_randomness_probe_makes_five_calls_at_a_relative_tolerance(tiny_clip):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain = is_randomized(tiny_clip, x)
    assert plain.calls == 5 and plain.diff <= RANDOM_TOL and not plain.randomized
    assert check_randomized(plain, 20).passed
    noisy, calls = _every_third_call_noisy(tiny_clip)
    assert not is_randomized(noisy, x, calls=2).randomized          # two calls miss it
    calls[0] = 0
    r = is_randomized(noisy, x)
    assert r.randomized and r.diff > RANDOM_TOL
    c = check_randomized(r, 20)
    assert c.status == "WARN" and "randomized model: 5 calls on 4 images differ" in c.message
    # noise of relative size 1e-6 on every third call: below the relative tolerance, deterministic
    big, _ = _every_third_call_noisy(tiny_clip, size=1e-6)
    assert not is_randomized(big, x).randomized


def _outcomes(n: int, white: list[int], square: list[int], clean: int = 0) -> Outcomes:
    o = Outcomes(torch.full((n,), clean))
    o.add("apgd", "white-box", torch.tensor(white))
    o.add("square", "black-box", torch.tensor(square))
    return o


def test_square_alone_may_break_at_most_0_2_percent_at_r1_and_at_the_exit_rank():
    # one image of 12 broken by Square only: the former 2 % (at least 2) let it pass, AutoAttack's 0.2 % does not
    lines = check_black_vs_white({"full": _outcomes(12, [0] * 12, [1] + [0] * 11)}, exit_k=10)
    assert [c.passed for c in lines] == [False, True] and "at R@1: 1 of 12" in lines[0].message
    # 1 of 600 is within 0.2 %, 2 of 600 is not
    assert all(c.passed for c in check_black_vs_white({"full": _outcomes(600, [0] * 600, [1] + [0] * 599)}))
    assert not check_black_vs_white({"full": _outcomes(600, [0] * 600, [1, 1] + [0] * 598)})[0].passed
    # the white-box attack moved an image to rank 3, Square alone past the exit rank 10: flagged at R@10 only
    lines = check_black_vs_white({"full": _outcomes(12, [3] + [0] * 11, [10] + [0] * 11)}, exit_k=10)
    assert [c.passed for c in lines] == [True, False] and "at R@10: 1 of 12" in lines[1].message


def test_fgsm_stronger_than_the_iterative_attack_is_flagged_at_r1_and_the_exit_rank():
    ref = torch.tensor([0, 0, 5, 12])
    assert all(c.passed for c in check_fgsm_vs_iterative(torch.tensor([0, 0, 5, 12]), "pgd", ref, 10))
    lines = check_fgsm_vs_iterative(torch.tensor([1, 0, 10, 12]), "pgd", ref, 10)
    assert [c.passed for c in lines] == [False, False] and "FGSM vs pgd i2t R@1: 25.0 < 50.0" in lines[0].message
    # the same check on the full set, when FGSM and PGD both ran
    o = Outcomes(torch.zeros(4, dtype=torch.long))
    o.add("fgsm", "white-box", torch.tensor([1, 0, 10, 12]))
    o.add("pgd", "white-box", ref)
    flags = [c for c in run_checks(ThreatModel(), {"attacks": {}}, ctx_checks={}, probe=None, outcomes={"full": o})
             if not c.passed]
    assert [c.message.split(":")[0] for c in flags] == ["FGSM vs pgd i2t R@1", "FGSM vs pgd i2t R@10"]


def test_probabilities_constant_and_saturated_scores_are_flagged():
    logits = torch.tensor([[9.0, 3.0, 1.0], [2.0, 8.0, 0.5]])
    pos = torch.tensor([[True, False, False], [False, True, False]])
    assert check_output_range(logits, pos).passed
    assert "probabilities" in check_output_range(logits.softmax(1), pos).message
    assert not check_output_range(logits.softmax(1), pos).passed          # AutoAttack's check_range_output
    assert not check_output_range(torch.ones(2, 3), pos).passed           # no ranking information
    assert not check_output_range(logits * 100, pos).passed               # lead 600 > 87.3: one-hot softmax
    assert not check_output_range(logits.half() * 2, pos).passed          # float16 saturates from a lead of 9.7
    assert not check_output_range(torch.tensor([[float("nan"), 1.0, 0.0], [1.0, 2.0, 0.0]]), pos).passed


def _nan_attack(objective, images, threat, *, generator=None):
    adv = fgsm(objective, images, ThreatModel(eps=float(threat.eps)))
    adv[0, 0, 0, 0] = float("nan")
    return adv


NAN = AttackSpec("nan-fgsm", "white-box", _nan_attack, label="NaN-FGSM", checks=("bounds",))


def test_a_nan_adversarial_image_is_caught(tiny_clip, image_text_folder):
    from advlora.data import load_dataset

    data = load_dataset(str(image_text_folder))
    with registry.registered(NAN):
        out = evaluate_robust(tiny_clip, data, ["nan-fgsm"], ThreatModel(eps="2/255"), sanity_limit=2)
    assert out["attacks"]["nan-fgsm"]["checks"]["non_finite"] == 1
    bounds = [c for c in out["sanity"] if "nan-fgsm: adversarial images" in c.message]
    assert len(bounds) == 1 and not bounds[0].passed and "1 images NOT finite" in bounds[0].message


#: a throw-away attack declared for linf only, and a suite that holds it (every shipped attack runs under both)
LINF_ONLY = AttackSpec("linf-only", "black-box", lambda objective, images, threat, **kw: images, norms=("linf",))
LINF_SUITE = AttackSpec("linf-suite", "suite", None, uses=("norm", "eps", "seed"),
                        members=(SuiteMember("linf-only", "linf-only"),))


@pytest.mark.parametrize("command", ["eval", "attack"])
def test_norm_l2_with_a_suite_holding_a_linf_attack_is_refused_before_any_work(tmp_path, monkeypatch, capsys,
                                                                                command):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    flag = "--attacks" if command == "eval" else "--attack"
    with registry.registered(LINF_ONLY), registry.registered(LINF_SUITE):
        # the data set does not exist: the refusal comes before any data (or model) is read
        code = main([command, "--model", "tiny-clip", "--data", str(tmp_path / "missing.jsonl"), flag,
                     "linf-suite", "--norm", "l2", "--eps", "0.5", "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert "--norm l2: the linf-suite suite's member linf-only implements only linf" in err[0]
        assert list(tmp_path.iterdir()) == []                     # nothing written
        with pytest.raises(AdvloraError, match="linf-only implements only linf"):
            evaluate_robust(None, None, ["linf-only"], ThreatModel(norm="l2", eps=0.5))
    registry.check_norm(["standard", "square"], "l2")             # the shipped suite and Square run under l2


def test_norm_l2_without_square_still_runs(tiny_clip, image_text_folder):
    from advlora.data import load_dataset

    out = evaluate_robust(tiny_clip, load_dataset(str(image_text_folder)), ["apgd"],
                          ThreatModel(norm="l2", eps=0.5, steps=2), sanity=False)
    assert out["attacks"]["apgd"]["threat"].startswith("l2 eps=0.5")
    assert json.dumps(out["attacks"]["apgd"].to_dict())
