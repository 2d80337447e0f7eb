"""A throw-away attack objective declared in this file alone (``image_objectives.registered``) is built by the
evaluation for PGD and APGD, for a suite's members under early exit, and for the sanity checks; and the attack
objective protocol: a wrapper forwards what the objective declares, a plain function gets the defaults."""
from __future__ import annotations

import pytest
import torch
from train_utils import write_word_pairs

from advlora.attacks import ThreatModel, image_objectives, registry
from advlora.attacks import objectives as O
from advlora.attacks.attack_objective import ATTRIBUTES, AttackObjective, Function, Wrapper, as_objective
from advlora.attacks.image_objectives import ObjectiveSpec
from advlora.attacks.registry import AttackSpec, SuiteMember
from advlora.data import load_dataset
from advlora.errors import AdvloraError
from advlora.evaluation.robust import evaluate_robust

BUILT: list[int] = []


def _half_margin(inputs: image_objectives.ObjectiveInputs):
    """Half the CW margin, aimed at the evaluation's ranks: a ranked, restrictable objective."""
    BUILT.append(len(inputs.images))
    tf, pos = inputs.scored()
    inner = O.margin(inputs.model, tf, pos, clean_features=inputs.clean_features, k=inputs.ranks)
    return O.RankedObjective(lambda x: (lambda o: (0.5 * o[0], o[1], o[2]))(inner.fn(x)), restrict=lambda rows: (
        lambda f: lambda x: (lambda o: (0.5 * o[0], o[1], o[2]))(f(x)))(inner.restrict(rows)))


HALF = ObjectiveSpec("half-margin", _half_margin, doc="a throw-away objective of a test")
SUITE = AttackSpec("mini-suite", "suite", None, uses=("norm", "eps", "seed"), members=(
    SuiteMember("pgd", "pgd", objective="half-margin", changes={"steps": 2}),
    SuiteMember("apgd", "apgd", objective="half-margin", changes={"steps": 2})), checks=("bounds",))


@pytest.fixture
def declared():
    with image_objectives.registered(HALF), registry.registered(SUITE):
        BUILT.clear()
        yield
    assert image_objectives.find("half-margin") is None


def _data(tmp_path, n: int = 6):
    return load_dataset(str(write_word_pairs(tmp_path, n)))


def test_a_throwaway_objective_runs_pgd_apgd_the_suite_and_the_checks(declared, tiny_clip, tmp_path):
    data = _data(tmp_path)
    th = ThreatModel(eps="8/255", steps=2, seed=0)
    res = evaluate_robust(tiny_clip, data, ["pgd", "apgd", "mini-suite"], th, objective="half-margin",
                          batch_size=3, sanity_limit=3, exit_k=1)
    for name in ("pgd", "apgd", "mini-suite/pgd", "mini-suite/apgd"):
        assert "objective=half-margin" in res["attacks"][name]["threat"], name
    assert res["attacks"]["mini-suite"]["metrics"]["i2t_r1"] <= res["clean"]["i2t_r1"]
    # built per batch: pgd and apgd (2 batches each), the suite's members on the images not done, the probe
    assert len(BUILT) >= 5
    messages = " ".join(str(c) for c in res["sanity"])
    assert "gradient" in messages        # the checks ran on the objective in use


def test_the_suite_exits_early_on_the_declared_objective(declared, tiny_clip, tmp_path):
    data = _data(tmp_path)
    th = ThreatModel(eps="32/255", steps=2, seed=0)
    res = evaluate_robust(tiny_clip, data, ["mini-suite"], th, objective="half-margin", batch_size=6,
                          sanity=False, exit_k=1)
    first, second = res["attacks"]["mini-suite/pgd"], res["attacks"]["mini-suite/apgd"]
    assert first["attacked"] <= len(data) and second["attacked"] <= first["attacked"]


def test_an_unknown_objective_is_one_line_listing_the_declared_ones():
    with pytest.raises(AdvloraError, match="unknown objective 'nope'.*contrastive"):
        image_objectives.check_objective("nope")
    with pytest.raises(AdvloraError, match="unknown objective 'dlr-targeted'"):   # a family: attacks fix it
        image_objectives.check_objective("dlr-targeted")


def test_a_wrapper_forwards_every_declared_attribute():
    inner = Function(lambda x: x.sum(dim=1), eot=3, stationary=True, ranked=True,
                     clean_outcome=(torch.zeros(2), torch.zeros(2, dtype=torch.long)))
    w = Wrapper(inner)
    for name in ATTRIBUTES:
        assert getattr(w, name) is getattr(inner, name), name

    class Done(Wrapper):
        finished = True

    assert Done(inner).finished and Done(inner).eot == 3
    plain = as_objective(lambda x: x.sum(dim=1))
    assert isinstance(plain, AttackObjective) and plain.eot == 1 and not plain.ranked and not plain.stationary
    assert as_objective(inner) is inner
    with pytest.raises(AdvloraError, match="unknown objective attribute"):
        Function(lambda x: x, stationry=True)
