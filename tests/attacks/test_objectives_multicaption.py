"""The image objectives with several captions per image and an exit rank, and the contrastive loss at a real
CLIP's logit scale (``advlora.attacks.objectives``, ``advlora.losses.multi_positive_ce``).

- APGD-T's targeted DLR on a five-caption score vector whose top scores are the image's own captions lowers
  the best positive and raises the target (the denominator over all captions raised the positive there);
  with one caption and rank 1 it is AutoAttack's targeted DLR exactly.
- Its targets are the negatives below the image's best positive; the margin and the targeted objectives aim
  at the lowest requested rank the image has not reached, and never fall when a rank is reached.
- The stable cross-entropy equals the float64 reference where the naive float32 one is finite and stays
  positive, with the right gradient signs, where the naive one is exactly 0 (scale 100, large leads).
"""
from __future__ import annotations

import pytest
import torch

from advlora.attacks import objectives as O
from advlora.losses import contrastive_loss, multi_positive_ce

#: one image, five own captions (columns 0-4, holding four of the five highest scores) and ten negatives
FIVE = torch.tensor([[0.60, 0.58, 0.57, 0.56, 0.50, 0.55, 0.40, 0.39, 0.38, 0.30, 0.29, 0.28, 0.27, 0.26, 0.25]],
                    dtype=torch.float64)
FIVE_POS = torch.zeros(1, 15, dtype=torch.bool)
FIVE_POS[0, :5] = True


class Scores:
    """A stand-in model whose image features are the score vector itself (text features: the identity), so
    an objective's gradient with respect to the "image" is its gradient with respect to each score."""

    def encode_image(self, x, normalize=True):
        return x.reshape(len(x), -1)


def _grad(fn, sim):
    sim = sim.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(sim).sum(), sim)
    return g


def _dlr_all_captions(sim, positives, t):
    """AutoAttack's targeted DLR with its denominator over every caption (the form that raised the positive)."""
    z_y = sim.masked_fill(~positives, float("-inf")).amax(dim=1)
    top = sim.topk(4, dim=1).values
    return (sim[torch.arange(len(sim)), t] - z_y) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2)


@pytest.mark.parametrize("ks", [(1,), (1, 5, 10), (5,)])
def test_targeted_dlr_lowers_the_best_positive_and_raises_the_target(ks):
    family = O.TargetedDLR(Scores(), torch.eye(15, dtype=torch.float64), FIVE_POS, FIVE, n_targets=3, k=ks)
    t = int(family.targets[0, 0])
    assert t == 5                                   # the highest negative, below the best positive
    x = FIVE.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(family.target(0)(x).sum(), x)
    assert g[0, 0] < 0, g                           # d/d(best positive): lowered
    assert (g[0, 1:5] == 0).all()                   # the other own captions take no part
    if ks == (1,) or ks == (1, 5, 10):              # rank 1 first: the target is raised
        assert g[0, t] > 0, g
    else:                                           # rank 5 only: the 5th highest negative (0.30) must rise
        assert g[0, 9] > 0, g
    # on the same vector the denominator over all captions (the image's own in pi_3 and pi_4) raised it
    assert _grad(lambda s: _dlr_all_captions(s, FIVE_POS, torch.tensor([t])), FIVE)[0, 0] > 0


def test_targeted_dlr_with_one_caption_at_rank_one_is_autoattacks():
    g = torch.Generator().manual_seed(0)
    sim = torch.rand(6, 20, generator=g, dtype=torch.float64)
    pos = torch.zeros(6, 20, dtype=torch.bool)
    pos[torch.arange(6), torch.arange(6)] = True
    t = torch.tensor([7, 8, 9, 10, 11, 12])
    assert torch.allclose(O.targeted_dlr(sim, pos, t, 1), _dlr_all_captions(sim, pos, t))


def test_targets_are_taken_below_the_positive():
    sim = torch.tensor([[0.9, 0.1, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],     # own caption first: rank 0
                        [0.5, 0.1, 0.8, 0.7, 0.6, 0.45, 0.4, 0.3]])   # own caption third: rank 3 (0.8, 0.7, 0.6)
    pos = torch.zeros(2, 8, dtype=torch.bool)
    pos[:, :2] = True
    family = O.TargetedDLR(Scores(), torch.eye(8), pos, sim, n_targets=3)
    assert family.targets.tolist() == [[2, 3, 4], [5, 6, 7]]
    family = O.TargetedDLR(Scores(), torch.eye(8), pos, sim, n_targets=5)   # fewer remain: the lowest five
    assert family.targets[1].tolist() == [3, 4, 5, 6, 7]


def test_margin_aims_at_the_kth_negative_and_the_next_rank_not_reached():
    pos = FIVE_POS
    assert torch.allclose(O.kth_negative(FIVE, pos, 1), torch.tensor([0.55], dtype=torch.float64))
    assert torch.allclose(O.kth_negative(FIVE, pos, 10), torch.tensor([0.25], dtype=torch.float64))
    assert torch.allclose(O.kth_negative(FIVE, pos, 50), torch.tensor([0.25], dtype=torch.float64))   # the lowest
    obj = O.margin(Scores(), torch.eye(15, dtype=torch.float64), pos, k=10)
    g = _grad(obj, FIVE)
    assert g[0, 0] == -1 and g[0, 14] == 1 and g.abs().sum() == 2      # best positive against the 10th negative
    staged = O.margin(Scores(), torch.eye(15, dtype=torch.float64), pos, k=(1, 5, 10))
    g = _grad(staged, FIVE)
    assert g[0, 0] < 0 and g[0, 5] > 0 and g.abs().gt(0).sum() == 2    # rank 0: the best negative first
    below = FIVE.clone()
    below[0, :5] -= 0.17                            # best positive 0.43: rank 1 (0.55 above it)
    g = _grad(staged, below)
    assert g[0, 0] < 0 and g[0, 9] > 0 and g.abs().gt(0).sum() == 2    # rank 1 reached: now the 5th negative


@pytest.mark.parametrize("ks", [(1, 5, 10), (1, 3)])
def test_staged_objectives_never_fall_when_the_positive_descends(ks):
    """The best positive sliding down through the negatives: every rank reached raises the objective."""
    margin = O.margin(Scores(), torch.eye(15, dtype=torch.float64), FIVE_POS, k=ks)
    family = O.TargetedDLR(Scores(), torch.eye(15, dtype=torch.float64), FIVE_POS, FIVE, n_targets=2, k=ks)
    values, ranks = [], []
    for drop in torch.linspace(0, 0.5, 101, dtype=torch.float64):
        s = FIVE.clone()
        s[0, :5] -= drop
        with torch.no_grad():
            values.append((float(margin(s)), float(family.target(0)(s))))
        ranks.append(int(margin.last_rank))
    assert ranks[0] == 0 and ranks[-1] >= max(ks)
    for (m0, t0), (m1, t1) in zip(values, values[1:]):
        assert m1 >= m0 - 1e-12 and t1 >= t0 - 1e-12


def test_stable_cross_entropy_equals_the_float64_reference_where_finite():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 12, generator=g, dtype=torch.float64) * 4
    pos = torch.rand(7, 12, generator=g) < 0.3
    pos[torch.arange(7), torch.arange(7)] = True
    naive = torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~pos, float("-inf")), 1)
    assert torch.allclose(multi_positive_ce(logits, pos), naive, rtol=1e-12, atol=0)
    assert torch.allclose(multi_positive_ce(logits.float(), pos).double(), naive, rtol=1e-5, atol=1e-6)


def test_stable_cross_entropy_stays_informative_at_a_logit_scale_of_100():
    cos = torch.tensor([[0.70, 0.55, 0.20, 0.15, 0.10],      # lead 15 logits: the naive float32 form is 0
                        [0.90, 0.85, 0.30, 0.25, 0.40],      # lead 50
                        [0.95, 0.10, 0.20, 0.00, 0.10]])     # lead 75, two positives
    pos = torch.tensor([[True, False, False, False, False],
                        [True, True, False, False, False],
                        [True, False, False, False, False]])
    logits = (100 * cos).float()
    naive32 = torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~pos, float("-inf")), 1)
    assert (naive32 == 0).all()                      # what the old form computed
    ref = multi_positive_ce(logits.double(), pos)
    x = logits.clone().requires_grad_(True)
    loss = multi_positive_ce(x, pos)
    assert (loss > 0).all() and torch.allclose(loss.double(), ref, rtol=1e-4, atol=0)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert (grad[~pos] > 0).all() and (grad[pos] <= 0).all() and (grad[pos].sum(0) < 0)
    x64 = logits.double().requires_grad_(True)
    (ref_grad,) = torch.autograd.grad(multi_positive_ce(x64, pos).sum(), x64)
    assert torch.allclose(grad.double(), ref_grad, rtol=1e-3, atol=0)
    feats = torch.nn.functional.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    assert contrastive_loss(feats, feats, 100.0) > 0          # a batch matched to itself: tiny, not 0


def test_a_row_without_negatives_has_loss_zero_and_a_finite_gradient():
    x = torch.tensor([[1.0, 2.0], [3.0, float("-inf")]], requires_grad=True)
    pos = torch.tensor([[True, True], [True, False]])          # row 1: its one negative left out (-inf)
    loss = multi_positive_ce(x, pos)
    assert loss.tolist() == [0.0, 0.0]
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert torch.isfinite(g).all()
