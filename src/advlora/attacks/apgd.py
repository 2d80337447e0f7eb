"""Auto-PGD (Croce and Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", arXiv 2003.01690) on any per-sample objective.

Threat model: linf or l2 ball of radius ``eps`` intersected with pixel space [0, 1]; ``images`` (B, ...) in
[0, 1], per-sample perturbations. As in the paper (and the AutoAttack reference code): step size starting at
2 * eps, momentum 0.75 (the first step has none), checkpoints w_j = ceil(p_j * steps) with p_0 = 0,
p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); at a checkpoint a sample's step is halved and it
restarts from its best point when fewer than 75 % of the steps since the last checkpoint increased its
objective, or when its step was not reduced at the last checkpoint and its best objective has not improved
since. Use it with the cross-entropy objective (``objectives.contrastive``, "APGD-CE") and with a margin
objective (``objectives.margin``, the DLR-like "APGD-margin"). Cost: steps forward+backward and one forward
per restart (the last iterate's gradient is never used), plus one forward for the clean image unless the
objective knows its clean outcome.
"""
from __future__ import annotations

import math

import torch

from advlora.attacks._utils import (
    Objective,
    WorstCase,
    _bview,
    ascent_direction,
    check_args,
    loss_and_grad,
    loss_only,
    outcome,
    project_image,
    reports_outcome,
    start_point,
)
from advlora.attacks.attack_objective import as_objective
from advlora.attacks.registry import AttackSpec, register
from advlora.attacks.stopping import finished
from advlora.attacks.threat import ThreatModel

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve the step: ceil(p_j * steps), p_0 = 0, p_1 = 0.22, ... (paper, Sec. 3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 6)) for q in p if q <= 1})


def apgd(objective: Objective, images: torch.Tensor, threat: ThreatModel, *,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Maximise ``objective`` with APGD; returns, per sample, the point with the worst retrieval outcome (rank of
    the best positive, ties by the objective; the objective alone when it reports no rank) over the clean image
    and all iterates of all restarts. The step-size schedule follows the objective, as in the paper.

    ``threat`` is read whole for its norm, eps, steps, restarts and random start; its ``step_size`` is not: APGD
    adapts its own. ``random_start=False`` starts at the clean image (moved by 0.001 * N(0, 1) when the
    objective is stationary there). ``generator`` draws the random starts (``threat.seed`` is not read).
    """
    check_args(images, threat.eps, threat.norm, threat.steps)
    objective = as_objective(objective)
    x0 = images.detach()
    worst = WorstCase(x0)                             # the returned point: worst outcome over everything seen
    if threat.random_start and reports_outcome(objective):
        worst.score_clean(objective, x0)              # the clean image is a point of the ball too
    return apgd_into(worst, objective, x0, threat, generator).x


def apgd_into(worst: WorstCase, objective: Objective, x0: torch.Tensor, budget: ThreatModel,
              generator: torch.Generator | None = None) -> WorstCase:
    """APGD's iterations from ``x0`` (validated) within ``budget`` (its norm, eps, steps, restarts and random
    start), every iterate competing in ``worst`` (returned). The last iterate of a restart is scored by a
    forward alone: its gradient would never be used."""
    eps, steps, norm = float(budget.eps), budget.steps, budget.norm
    restarts, random_start = budget.restarts, budget.random_start
    objective = as_objective(objective)
    marks = set(checkpoints(int(steps))[1:])
    for _ in range(int(restarts)):
        if finished(objective):
            break
        x = start_point(objective, x0, eps, norm, random_start, generator)
        loss, grad = loss_and_grad(objective, x)
        worst.update(loss, x, outcome(objective))
        best = WorstCase(x)                           # APGD's own state: the highest objective of this restart
        best.update(loss, x)
        grad_best = grad.clone()
        step = torch.full((x0.shape[0],), 2.0 * eps, device=x0.device, dtype=x0.dtype)
        x_prev = x.clone()
        history = [loss]                          # objective at every iterate, for the checkpoint test
        last_mark, best_at_mark = 0, best.loss.clone()
        reduced_at_mark = torch.ones_like(step, dtype=torch.bool)
        for i in range(int(steps)):
            if finished(objective):                   # every sample done (``attacks.stopping``)
                break
            a = 1.0 if i == 0 else MOMENTUM
            z = project_image(x + _bview(step, x) * ascent_direction(grad, norm), x0, eps, norm)
            x_new = project_image(x + a * (z - x) + (1 - a) * (x - x_prev), x0, eps, norm)
            x_prev, x = x, x_new
            if i == int(steps) - 1:                   # the final iterate: no step follows, so no gradient
                loss = loss_only(objective, x)
                worst.update(loss, x, outcome(objective))
                break
            loss, grad = loss_and_grad(objective, x)
            worst.update(loss, x, outcome(objective))
            history.append(loss)
            improved = best.update(loss, x)
            grad_best = torch.where(_bview(improved, grad), grad, grad_best)
            k = i + 1
            if k in marks:
                h = torch.stack(history[last_mark:k + 1])          # (k - last_mark + 1, B)
                increases = (h[1:] > h[:-1]).sum(dim=0).to(step)
                cond1 = increases < RHO * (k - last_mark)
                cond2 = ~reduced_at_mark & (best_at_mark >= best.loss)
                halve = cond1 | cond2
                step = torch.where(halve, step / 2, step)
                x = torch.where(_bview(halve, x), best.x, x)
                grad = torch.where(_bview(halve, grad), grad_best, grad)
                reduced_at_mark, best_at_mark, last_mark = halve, best.loss.clone(), k
    return worst


_USES = ("norm", "eps", "steps", "restarts", "random_start", "seed")
SPEC = register(AttackSpec("apgd", "white-box", apgd, uses=_USES, label="APGD",
                           checks=("bounds", "convergence", "reference"), reference=2, fn=apgd))
#: APGD on the margin objective (the DLR-like "APGD-margin" of the module docstring)
MARGIN = register(AttackSpec("apgd-margin", "white-box", apgd, uses=_USES, label="APGD-margin", line_label="APGD",
                             checks=("bounds", "reference"), objective="margin", reference=1))
