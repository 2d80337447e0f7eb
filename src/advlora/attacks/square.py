"""Square Attack (Andriushchenko et al. 2020, arXiv 1912.00049): a score-based black-box attack.

Threat model: linf or l2 ball of radius ``eps`` intersected with [0, 1]. It only *evaluates* the objective:
everything runs under ``torch.no_grad`` and backward is never called, so it is blind to gradient masking and
serves as the sanity check of the white-box attacks.
Inputs ``images`` (B, ..., C, H, W) in [0, 1] (images (B, 3, H, W), videos (B, F, 3, H, W)); the square window
is drawn per sample on the last two dimensions, one sign per channel (and per frame).

Algorithm (linf, as in the paper and AutoAttack): start from vertical stripes of +-eps; at query i, propose
setting a random s x s window of each sample to +-eps around the clean image (s from the fraction schedule
p_i: p_init halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10000 rescaled to the budget) and keep
it where the objective increases (one sign draw per query and sample; a proposal that would leave the image
unchanged takes the opposite signs, where AutoAttack redraws).

Algorithm (l2, as AutoAttack's ``square_attack_l2``): start from a 5 x 5 grid of s x s blocks (s = H // 5), each
holding the meta-pseudo-gaussian pattern ``eta(s)`` (two nested-square halves of opposite sign, normalised) with
a random sign per channel, the whole perturbation scaled to l2 norm ``eps``. At query i, with s from the same
schedule (at least 3, odd), pick two s x s windows per sample; the first gets a new ``eta(s)`` (randomly
transposed, a random sign per channel) plus its current content, renormalised per channel to hold the mass of
both windows and that channel's share of the unused budget ``eps^2 - ||delta||^2``; the second is emptied;
the whole perturbation is rescaled to norm ``eps`` and the image clamped to [0, 1] (clamping only shrinks it),
kept where the objective increases. Windows, signs and transpositions are drawn per sample (AutoAttack draws
one window per query for the whole batch). Budget: ``queries`` batch evaluations after the initial one, plus one of
the clean images: a sample whose search ends below its clean objective returns the clean image.
"""
from __future__ import annotations

import functools
import math

import torch

from advlora.attacks._utils import Objective, WorstCase, check_args
from advlora.attacks.attack_objective import as_objective
from advlora.attacks.registry import AttackSpec, register
from advlora.attacks.seeding import is_per_sample
from advlora.attacks.stopping import finished
from advlora.attacks.threat import ThreatModel
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
def square(objective: Objective, images: torch.Tensor, threat: ThreatModel, *, queries: int = 1000,
           p_init: float = 0.8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Maximise ``objective`` with at most ``queries`` + 2 evaluations per sample; no gradient is ever taken.
    Returns, per sample, the evaluated point (the clean image included) with the worst retrieval outcome (rank
    of the best positive, ties by the objective), or the highest objective when it reports no rank.

    ``threat``: its norm and eps are read (the budget is ``queries``, not its steps). ``p_init`` 0.8 is
    AutoAttack's default for linf and l2.
    """
    norm = threat.norm
    eps = check_args(images, threat.eps, norm)
    objective = as_objective(objective)
    if isinstance(queries, bool) or int(queries) != queries or queries < 1:
        raise AdvloraError(f"square queries must be an integer >= 1, got {queries!r}")
    if images.dim() < 4:
        raise AdvloraError(f"square needs images (B, ..., C, H, W); got shape {tuple(images.shape)}")
    x0 = images.detach()
    B, *lead, H, W = x0.shape                     # lead = (..., C)
    dev = x0.device
    worst = WorstCase(x0)                         # the returned point: worst outcome over every query
    worst.score_clean(objective, x0)              # the clean image is a point of the ball too
    if norm == "l2":
        return _square_l2(objective, worst, x0, eps, int(queries), p_init, generator)
    stripes = _signs((B, *lead, 1, W), generator, dev).to(x0.dtype)
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


def eta(s: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(s, s) the meta-pseudo-gaussian window of the l2 Square Attack: the top s // 2 rows and the rest hold
    nested squares of weight sum 1 / (r + 1)^2 around their centres, of opposite signs; unit l2 norm."""
    return _eta(int(s)).to(device=device, dtype=dtype, copy=True)   # the cached one stays untouched


@functools.lru_cache(maxsize=64)
def _eta(s: int) -> torch.Tensor:
    """``eta(s)`` in float64 on the CPU, built once per window size (the schedule revisits a few sizes)."""
    out = torch.cat([_rectangles(s // 2, s), -_rectangles(s - s // 2, s)])
    return out / out.norm().clamp_min(1e-12)


def _rectangles(h: int, w: int) -> torch.Tensor:
    """(h, w) nested rectangles from the centre outwards, the r-th adding 1 / (r + 1)^2; unit l2 norm."""
    delta = torch.zeros(h, w, dtype=torch.float64)
    ch, cw = h // 2, w // 2
    for r in range(max(h // 2 + 1, w // 2 + 1)):
        delta[max(ch - r, 0):min(ch + r + 1, h), max(cw - r, 0):min(cw + r + 1, w)] += 1.0 / (r + 1) ** 2
    n = delta.norm()
    return delta / n if n > 0 else delta


def _windows(B: int, H: int, W: int, s: int, generator, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample the rows (B, s) and columns (B, s) of a random s x s window."""
    ar = torch.arange(s, device=dev)
    vh = _randint(H - s + 1, B, generator, dev)
    vw = _randint(W - s + 1, B, generator, dev)
    return vh[:, None] + ar, vw[:, None] + ar


def _square_l2(objective: Objective, worst: WorstCase, x0: torch.Tensor, eps: float, queries: int,
               p_init: float, generator) -> torch.Tensor:
    """The l2 search of ``square`` (module docstring) from ``x0`` (B, ..., C, H, W), the clean image already in
    ``worst``; returns ``worst.x``."""
    B, *lead, H, W = x0.shape
    dev, dt = x0.device, x0.dtype
    C = math.prod(lead)                           # channels (and frames): one sign and one budget share each
    x0c = x0.reshape(B, C, H, W)
    b_idx = torch.arange(B, device=dev)[:, None, None, None]
    c_idx = torch.arange(C, device=dev)[None, :, None, None]

    def normalize(d: torch.Tensor) -> torch.Tensor:
        return d / d.reshape(B, -1).norm(dim=1).clamp_min(1e-12).view(B, 1, 1, 1)

    # the initial perturbation: a grid of s x s blocks, each eta(s) with a random sign per channel
    s = max(H // 5, 1)
    delta = torch.zeros_like(x0c)
    e = eta(s, dev, dt)
    top, left = (H - s * (H // s)) // 2, (W - s * (W // s)) // 2
    for i in range(H // s):
        for j in range(W // s):
            sign = _signs((B, *lead, 1, 1), generator, dev).to(dt).reshape(B, C, 1, 1)
            r, c = top + i * s, left + j * s
            delta[:, :, r:r + s, c:c + s] += e * sign
    x_best = (x0c + eps * normalize(delta)).clamp(0, 1)
    loss_best = worst.score(objective, x_best.view_as(x0))
    n_features = C * H * W
    for i in range(queries):
        if finished(objective):                   # every sample done (``attacks.stopping``)
            break
        p = p_selection(p_init, i, queries)
        s = max(int(round(math.sqrt(p * n_features / C))), 3)
        s = min(s + 1 if s % 2 == 0 else s, H, W)
        delta = x_best - x0c
        r1, c1 = _windows(B, H, W, s, generator, dev)
        r2, c2 = _windows(B, H, W, s, generator, dev)
        at1 = (b_idx, c_idx, r1[:, None, :, None], c1[:, None, None, :])
        at2 = (b_idx, c_idx, r2[:, None, :, None], c2[:, None, None, :])
        old = delta[at1]                                               # (B, C, s, s)
        both = torch.zeros(B, 1, H, W, dtype=torch.bool, device=dev)
        both[b_idx[:, :1], 0, r1[:, None, :, None], c1[:, None, None, :]] = True
        both[b_idx[:, :1], 0, r2[:, None, :, None], c2[:, None, None, :]] = True
        mass = (delta * both).pow(2).sum(dim=(-2, -1), keepdim=True)   # (B, C, 1, 1): both windows, per channel
        spare = (eps ** 2 - delta.reshape(B, -1).pow(2).sum(dim=1)).clamp_min(0).view(B, 1, 1, 1)
        e = eta(s, dev, dt)
        flip = _randint(2, B, generator, dev).bool().view(B, 1, 1, 1)
        sign = _signs((B, *lead, 1, 1), generator, dev).to(dt).reshape(B, C, 1, 1)
        new = torch.where(flip, e.t(), e) * sign + old / old.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt().add(1e-12)
        new = new / new.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt().add(1e-12) * (spare / C + mass).sqrt()
        delta = delta.index_put(at2, torch.zeros((), dtype=dt, device=dev)).index_put(at1, new)
        x_new = (x0c + eps * normalize(delta)).clamp(0, 1)
        loss = worst.score(objective, x_new.view_as(x0))
        better = loss > loss_best                 # the search itself follows the objective
        loss_best = torch.where(better, loss, loss_best)
        x_best = torch.where(better.view(B, 1, 1, 1), x_new, x_best)
    return worst.x


def _train(objective: Objective, images: torch.Tensor, threat, *, generator: torch.Generator | None = None,
           queries: int | None = None) -> torch.Tensor:
    """Training's Square: the threat's ``steps`` as its query budget (a training attack is budgeted in steps)."""
    return square(objective, images, threat, queries=threat.steps, generator=generator)


SPEC = register(AttackSpec("square", "black-box", square, uses=("norm", "eps", "seed"), label="Square",
                           options={"queries": 1000}, line_keys=("objective",),
                           checks=("bounds", "versus_white_box"), fn=square, training_run=_train))
