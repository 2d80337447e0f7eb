"""Square Attack (Andriushchenko et al. 2020, arXiv 1912.00049): a score-based black-box attack.

Threat model: linf ball of radius ``eps`` intersected with [0, 1] (the l2 variant is not implemented and is
refused). It only *evaluates* the objective: everything runs under ``torch.no_grad`` and backward is never
called, so it is blind to gradient masking and serves as the sanity check of the white-box attacks.
Inputs ``images`` (B, ..., C, H, W) in [0, 1] (images (B, 3, H, W), videos (B, F, 3, H, W)); the square window
is drawn per sample on the last two dimensions, one sign per channel (and per frame).

Algorithm (linf, as in the paper and AutoAttack): start from vertical stripes of +-eps; at query i, propose
setting a random s x s window of each sample to +-eps around the clean image (s from the fraction schedule
p_i: p_init halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10000 rescaled to the budget) and keep
it where the objective increases (one sign draw per query and sample; a proposal that would leave the image
unchanged takes the opposite signs, where AutoAttack redraws). Budget: ``queries`` batch evaluations after the initial one, plus one of
the clean images: a sample whose search ends below its clean objective returns the clean image.
"""
from __future__ import annotations

import math

import torch

from advlora.attacks._utils import Objective, WorstCase, check_args
from advlora.attacks.registry import AttackSpec, register
from advlora.attacks.seeding import is_per_sample
from advlora.attacks.stopping import finished
from advlora.errors import AdvloraError

_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(p_init: float, it: int, queries: int) -> float:
    """Fraction of pixels changed at query ``it`` (the paper's schedule, rescaled from 10000 queries)."""
    it = int(it / max(queries, 1) * 10000)
    return p_init / 2 ** sum(it > t for t in _SCHEDULE)


def _signs(shape, generator, device) -> torch.Tensor:
    if is_per_sample(generator):
        return (generator.randint(0, 2, shape) * 2 - 1).to(device)
    dev = generator.device if generator is not None else device
    return (torch.randint(0, 2, shape, generator=generator, device=dev) * 2 - 1).to(device)


def _randint(high: int, n: int, generator, device) -> torch.Tensor:
    if is_per_sample(generator):
        return generator.randint(0, high, (n,)).to(device)
    dev = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=dev).to(device)


@torch.no_grad()
def square(objective: Objective, images: torch.Tensor, *, eps: float | str, queries: int = 1000,
           norm: str = "linf", p_init: float = 0.8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Maximise ``objective`` with at most ``queries`` + 2 evaluations per sample; no gradient is ever taken.
    Returns, per sample, the evaluated point (the clean image included) with the worst retrieval outcome (rank
    of the best positive, ties by the objective), or the highest objective when it reports no rank.

    ``p_init`` 0.8 is AutoAttack's default for linf.
    """
    eps = check_args(images, eps, norm)
    if norm != "linf":
        raise AdvloraError("square: only the linf threat model is implemented (use --norm linf)")
    if isinstance(queries, bool) or int(queries) != queries or queries < 1:
        raise AdvloraError(f"square queries must be an integer >= 1, got {queries!r}")
    if images.dim() < 4:
        raise AdvloraError(f"square needs images (B, ..., C, H, W); got shape {tuple(images.shape)}")
    x0 = images.detach()
    B, *lead, H, W = x0.shape                     # lead = (..., C)
    dev = x0.device
    stripes = _signs((B, *lead, 1, W), generator, dev).to(x0.dtype)
    worst = WorstCase(x0)                         # the returned point: worst outcome over every query
    worst.score_clean(objective, x0)              # the clean image is a point of the ball too
    x_best = (x0 + eps * stripes).clamp(0, 1)
    loss_best = worst.score(objective, x_best)
    n_features = math.prod(x0.shape[1:])
    channels = math.prod(lead)
    rows = torch.arange(H, device=dev)
    cols = torch.arange(W, device=dev)
    bview = [B] + [1] * len(lead)
    for i in range(int(queries)):
        if finished(objective):                   # every sample done (``attacks.stopping``)
            break
        p = p_selection(p_init, i, int(queries))
        s = max(int(round(math.sqrt(p * n_features / channels))), 1)
        s = min(s, H - 1 if H > 1 else 1, W - 1 if W > 1 else 1)
        vh = _randint(H - s + 1, B, generator, dev)
        vw = _randint(W - s + 1, B, generator, dev)
        mask = ((rows[None] >= vh[:, None]) & (rows[None] < (vh + s)[:, None]))[:, :, None] & \
               ((cols[None] >= vw[:, None]) & (cols[None] < (vw + s)[:, None]))[:, None, :]   # (B, H, W)
        mask = mask.view(*bview, H, W)
        # one sign draw per query; a sample whose window already holds exactly that proposal takes the
        # opposite signs instead, so no query is spent on an unchanged image
        signs = _signs((B, *lead, 1, 1), generator, dev).to(x0.dtype)
        x_new = torch.where(mask, (x0 + eps * signs).clamp(0, 1), x_best)
        same = (x_new - x_best).abs().reshape(B, -1).amax(dim=1) < 1e-7
        if same.any():
            signs = torch.where(same.view(*bview, 1, 1), -signs, signs)
            x_new = torch.where(mask, (x0 + eps * signs).clamp(0, 1), x_best)
        loss = worst.score(objective, x_new)
        better = loss > loss_best                 # the search itself follows the objective
        loss_best = torch.where(better, loss, loss_best)
        x_best = torch.where(better.view(*bview, 1, 1), x_new, x_best)
    return worst.x


def _run(objective: Objective, images: torch.Tensor, threat, *, generator: torch.Generator | None = None,
         queries: int = 1000) -> torch.Tensor:
    return square(objective, images, eps=float(threat.eps), queries=queries, norm=threat.norm, generator=generator)


SPEC = register(AttackSpec("square", "black-box", _run, uses=("norm", "eps", "seed"), label="Square",
                           options={"queries": 1000}, line_keys=("objective",),
                           checks=("bounds", "versus_white_box"), fn=square, norms=("linf",)))
