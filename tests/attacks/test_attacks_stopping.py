"""advlora.attacks.stopping: an objective restricted to rows is those rows of the full one; a stopped attack
queries only the images not yet done, and every image's outcome, cut at the done rank, is the full attack's."""
from __future__ import annotations

import pytest
import torch

from advlora.attacks import ThreatModel
from advlora.attacks import objectives as O
from advlora.attacks.apgd import apgd
from advlora.attacks.apgd_t import apgd_targeted
from advlora.attacks.seeding import SampleGenerators
from advlora.attacks.square import square
from advlora.attacks.stopping import StopAtRank, stop_at_rank
from advlora.errors import AdvloraError

B, N, S = 8, 12, 8


class Linear(torch.nn.Module):
    """A linear image encoder on 8 x 8 images: features that move with the pixels, so small budgets break some
    images and not others."""

    def __init__(self, seed: int = 0, dim: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(3 * S * S, dim, generator=g) / (3 * S * S) ** 0.5)
        self.logit_scale = torch.tensor(20.0)

    def encode_image(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        f = (x.reshape(len(x), -1) - 0.5) @ self.w
        return torch.nn.functional.normalize(f, dim=-1) if normalize else f


@pytest.fixture(scope="module")
def setup():
    model = Linear()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, S, S, generator=g)
    with torch.no_grad():
        cf = model.encode_image(x)
    tf = torch.nn.functional.normalize(torch.randn(N, cf.shape[1], generator=g), dim=1)
    pos = torch.zeros(B, N, dtype=torch.bool)
    pos[torch.arange(B), (cf @ tf.t()).argmax(1)] = True     # every image right at rank 0, clean
    pos[0, (cf[0] @ tf.t()).argmin()] = True                  # and one with two captions
    return model, x, tf, pos, cf


class Counting:
    """The model, counting the image rows it encodes."""

    def __init__(self, model) -> None:
        self.model, self.rows = model, 0
        self.logit_scale = model.logit_scale

    def encode_image(self, x):
        self.rows += x.shape[0]
        return self.model.encode_image(x)


def _objectives(model, x, tf, pos, cf):
    fam = O.TargetedDLR(model, tf, pos, x, n_targets=3)
    return {"contrastive": O.contrastive(model, tf, pos, clean_features=cf),
            "margin": O.margin(model, tf, pos, clean_features=cf),
            "target": fam.target(1), "targets_of": fam.targets_of([0, 2])}


@pytest.mark.parametrize("name", ["contrastive", "margin", "target", "targets_of"])
def test_select_gives_the_rows_of_the_full_objective(setup, name):
    model, x, tf, pos, cf = setup
    obj = _objectives(model, x, tf, pos, cf)[name]
    xs = x if name != "targets_of" else x.repeat(2, 1, 1, 1)
    with torch.no_grad():
        full = obj(xs)
        rank = obj.last_rank.clone()
        rows = torch.tensor([4, 0, 3]) if name != "targets_of" else torch.tensor([7, 1, 10])
        sub = obj.select(rows)
        part = sub(xs[rows])
    torch.testing.assert_close(part, full[rows], rtol=1e-5, atol=1e-6)
    assert sub.last_rank.tolist() == rank[rows].tolist()


def test_objectives_without_rows_are_left_alone(setup):
    model, x, tf, pos, cf = setup
    plain = O.embedding(model, cf)
    assert stop_at_rank(plain, 1) is plain
    assert stop_at_rank(O.contrastive(model, tf, pos), None).__class__ is O.RankedObjective
    with pytest.raises(AdvloraError, match="restricted"):
        StopAtRank(plain, 1)


def _run(attack, obj, x, key, eps="4/255", steps=10, **kw):
    return attack(obj, x, ThreatModel(eps=eps, steps=steps), generator=SampleGenerators(0, range(len(x)), key), **kw)


def _ranks(model, images, tf, pos):
    with torch.no_grad():
        return O.best_positive_rank(model.encode_image(images) @ tf.t(), pos)


@pytest.mark.parametrize("attack,kw,objective,done", [(apgd, {"steps": 6}, "contrastive", 2),
                                                      (apgd, {"steps": 6}, "contrastive", 3),
                                                      (square, {"queries": 40}, "margin", 1),
                                                      (apgd_targeted, {"steps": 4, "targets": 3}, "dlr", 2),
                                                      (apgd_targeted, {"steps": 4, "targets": 3}, "dlr", 3)])
def test_a_stopped_attack_queries_less_and_cuts_to_the_same_outcome(setup, attack, kw, objective, done):
    model, x, tf, pos, cf = setup
    counts, outs = [], []
    for stopped in (False, True):
        m = Counting(model)
        if objective == "dlr":
            obj = O.TargetedDLR(m, tf, pos, x, n_targets=3)
        else:
            obj = getattr(O, objective)(m, tf, pos, clean_features=cf)
        m.rows = 0
        outs.append(_run(attack, stop_at_rank(obj, done) if stopped else obj, x, attack.__name__, eps="8/255", **kw))
        counts.append(m.rows)
    full, cut = (_ranks(model, o, tf, pos) for o in outs)
    assert bool((full >= done).any()) and bool((full < done).any()), (full, done)   # both kinds of image
    assert full.clamp(max=done).tolist() == cut.clamp(max=done).tolist()
    assert counts[1] < counts[0], counts               # images done early were no longer queried
    for o in outs:
        assert (o - x).abs().max() <= 8 / 255 + 1e-6 and o.min() >= 0 and o.max() <= 1


def test_every_image_done_at_its_clean_outcome_costs_no_forward(setup):
    model, x, tf, pos, cf = setup
    m = Counting(model)
    obj = stop_at_rank(O.contrastive(m, tf, pos, clean_features=cf), 0)   # rank >= 0: all done before starting
    assert obj.finished
    out = _run(apgd, obj, x, "apgd", steps=5)
    assert m.rows == 0 and torch.equal(out, x)


def test_targets_of_one_image_share_its_state(setup):
    model, x, tf, pos, cf = setup
    fam = stop_at_rank(O.TargetedDLR(model, tf, pos, x, n_targets=3), 1)
    both = fam.targets_of([0, 1])
    clean = fam.family.target(0).clean_outcome[1]
    done = clean >= 1
    assert both.todo(2 * B).tolist() == (~done).repeat(2).tolist()
    rank = torch.full((2 * B,), 0, dtype=torch.long)
    rank[B + 2] = 5                                   # image 2 broken under the second target
    both.state.note(both.image_of, rank)
    assert not bool(fam.target(2).todo(B)[2])         # ... so it is done for every target
