"""The l2 threat model end to end: Square's l2 search stays in the ball and in [0, 1] and raises the margin, the
``standard`` suite runs under l2 and is never better than a member, and ``--norm l2`` reaches evaluation and
training from the command line."""
from __future__ import annotations

import json

import pytest
import torch

from advlora.attacks import ThreatModel, registry
from advlora.attacks import objectives as O
from advlora.attacks.registry import AttackSpec, SuiteMember
from advlora.attacks.square import eta, square
from advlora.cli import main
from advlora.evaluation import robust as R

#: the standard suite's members (``attacks.standard``) at a budget a unit test can afford
SMALL = AttackSpec("standard-l2-tiny", "suite", None, uses=("norm", "eps", "seed"), label="standard-l2-tiny",
                   checks=("bounds",),
                   members=(SuiteMember("apgd-ce", "apgd", objective="contrastive", changes={"steps": 4}),
                            SuiteMember("apgd-t", "apgd-t", changes={"steps": 3}, options={"targets": 2}),
                            SuiteMember("square", "square", objective="margin", options={"queries": 30})))


class Linear:
    """``objective(x) = <w, x>``: Square's search has a direction to find."""

    def __init__(self, shape, seed: int = 0) -> None:
        self.w = torch.randn(shape[1:], generator=torch.Generator().manual_seed(seed))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1)


def test_eta_is_the_reference_window():
    e = eta(5)
    assert torch.isclose(e.norm(), torch.tensor(1.0))
    assert (e[:2] > 0).all() and (e[2:] < 0).all()                  # two halves of opposite sign
    assert e[1, 2] == e[:2].max() and e[3, 2] == e[2:].min()        # each peaks at its centre
    # AutoAttack's nested squares: the rim weighs 1/9, the next ring adds 1/4, the centre 1 (top half)
    top = e[:2] / e[0, 0]
    assert torch.allclose(top[0], torch.tensor([1, 1 + 9 / 4, 1 + 9 / 4, 1 + 9 / 4, 1.0]))
    assert torch.isclose(top[1, 2], torch.tensor(1 + 9 / 4 + 9.0))


@pytest.mark.parametrize("shape", [(5, 3, 16, 16), (3, 2, 3, 12, 10)])
def test_square_l2_stays_in_the_ball_and_in_pixel_space(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    x[0] = x[0].round()                                            # a sample on the box's corners
    eps = 1.5
    obj = Linear(shape)
    for seed in range(4):
        adv = square(obj, x, ThreatModel(eps=eps, norm="l2"), queries=40,
                     generator=torch.Generator().manual_seed(seed))
        d = (adv - x).flatten(1).norm(dim=1)
        assert (d <= eps * (1 + 1e-5)).all(), (seed, d)
        assert adv.min() >= 0 and adv.max() <= 1
        assert (obj(adv) >= obj(x)).all()                          # the clean image competes
        assert (d > 0).any()


def test_square_l2_raises_the_margin_on_a_tiny_model(tiny_clip):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, tiny_clip.image_size, tiny_clip.image_size, generator=g)
    tf = tiny_clip.encode_text([f"caption {i}" for i in range(6)]).detach()
    pos = torch.zeros(4, 6, dtype=torch.bool)
    pos[torch.arange(4), torch.arange(4)] = True
    obj = O.margin(tiny_clip, tf, pos)
    with torch.no_grad():
        before = obj(x)
        adv = square(obj, x, ThreatModel(eps=2.0, norm="l2"), queries=60, generator=torch.Generator().manual_seed(0))
        after = obj(adv)
    assert (after >= before).all() and (after > before).sum() >= 3, (before, after)
    assert ((adv - x).flatten(1).norm(dim=1) <= 2.0 * (1 + 1e-5)).all()


@pytest.fixture(scope="module")
def small_suite():
    with registry.registered(SMALL):
        yield SMALL.name


def test_the_l2_suite_is_at_most_each_member(tiny_clip, small_suite, tmp_path):
    from train_utils import write_data

    from advlora.data import load_dataset

    data = load_dataset(str(write_data(tmp_path, n=8)))
    th = ThreatModel(norm="l2", eps=1.0)
    out = R.evaluate_robust(tiny_clip, data, [small_suite], th, batch_size=4, sanity=False, exhaustive=True)
    suite = out["attacks"][small_suite]
    assert suite.threat.startswith("l2 eps=1 ")
    i2t = [k for k in suite.metrics if k.startswith("i2t")]
    assert len(i2t) == 3
    for m in SMALL.members:
        member = out["attacks"][f"{small_suite}/{m.label}"]
        assert member.threat.startswith("l2 eps=1 "), member.threat
        for k in i2t:
            assert suite.metrics[k] <= member.metrics[k] + 1e-9, (m.label, k)
        assert all(s >= r for s, r in zip(suite.ranks["i2t"], member.ranks["i2t"])), m.label   # per image
        bounds = out["attacks"][f"{small_suite}/{m.label}"].checks
        assert bounds["max_perturbation"] <= 1.0 + 1e-5, (m.label, bounds)
    assert suite.metrics["i2t_r1"] <= out["clean"]["i2t_r1"]


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    from train_utils import save_test_model, write_data

    root = tmp_path_factory.mktemp("l2cli")
    return save_test_model(root / "model"), write_data(root / "data", n=4)


def test_eval_runs_under_l2_on_the_command_line(model_and_data, tmp_path, capsys):
    model, ann = model_and_data
    out = tmp_path / "run"
    assert main(["eval", "--model", str(model), "--data", str(ann), "--device", "cpu", "--batch-size", "4",
                 "--attacks", "pgd,square", "--norm", "l2", "--eps", "0.5", "--attack-steps", "2",
                 "--square-queries", "10", "--objective", "dlr", "--no-sanity", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    text = json.dumps(printed)
    assert "l2 eps=0.5 PGD" in text and "l2 eps=0.5 Square" in text
    assert "objective=dlr" in text                                 # the loss choice is in the threat line
    config = (out / "config.yaml").read_text()
    assert "norm: l2" in config


def test_train_runs_under_l2_with_a_chosen_attack_loss(model_and_data, tmp_path, capsys):
    import yaml
    from train_utils import tiny_config

    _, ann = model_and_data
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tiny_config(ann)))
    out = tmp_path / "out"
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--steps", "1", "--attack-steps", "1",
                 "--norm", "l2", "--eps", "1", "--attack-loss", "margin", "--out", str(out), "--json",
                 "--progress", "off"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = yaml.safe_load((out / "config.yaml").read_text())["attack"]
    assert (saved["norm"], saved["eps"], saved["attack_loss"]) == ("l2", "1", "margin")   # not 255/255
    line = json.loads((out / "metrics.json").read_text())["train_attack"]
    assert line.startswith("l2 eps=1 PGD") and line.endswith("attack-loss=margin"), line
    assert "clean" in printed


def test_the_sanity_lines_read_l2_radii():
    from advlora.evaluation.sanity import check_bounds

    (line,) = check_bounds("pgd", {"max_perturbation": 0.49, "min_pixel": 0.0, "max_pixel": 1.0},
                           ThreatModel(norm="l2", eps=0.5))
    assert line.passed and "in the l2 ball (max 0.4900 <= 0.5)" in line.message, line.message
    (line,) = check_bounds("pgd", {"max_perturbation": 0.51, "min_pixel": 0.0, "max_pixel": 1.0},
                           ThreatModel(norm="l2", eps=0.5))
    assert not line.passed
    from advlora.evaluation.sanity import check_monotone

    line = check_monotone([(1.0, 30.0), (0.5, 40.0)], "pgd", "l2")
    assert line.passed and "0.5: 40.0, 1: 30.0" in line.message, line.message
