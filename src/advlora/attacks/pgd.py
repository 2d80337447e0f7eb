"""Projected gradient descent (Madry et al. 2018, arXiv 1706.06083) on any per-sample objective.

Threat model: linf or l2 ball of radius ``eps`` around each image, intersected with pixel space [0, 1].
Inputs: ``images`` (B, ...) in [0, 1] (images (B, 3, H, W) or videos (B, F, 3, H, W)); every sample has its own
perturbation. Cost: exactly one forward and one backward per step; the loss of the current iterate, computed
for its gradient, also feeds the worst-case bookkeeping, so the only extra work is one forward (no backward)
per restart to score the last iterate.
"""
from __future__ import annotations

import torch

from advlora.attacks._utils import (
    Objective,
    WorstCase,
    ascent_direction,
    check_args,
    loss_and_grad,
    outcome,
    project_image,
    reports_outcome,
    start_point,
)
from advlora.attacks.attack_objective import as_objective
from advlora.attacks.registry import AttackSpec, register
from advlora.attacks.threat import ThreatModel


def pgd(objective: Objective, images: torch.Tensor, threat: ThreatModel, *,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Maximise ``objective`` within ``threat``'s ball; returns adversarial images (B, ...) in [0, 1].

    Args:
        objective: ``objective(x) -> Tensor[B]``, the per-sample loss to maximise (see ``advlora.attacks.objectives``).
        images: clean inputs (B, ...) in [0, 1].
        threat: the budget, read whole: ``norm`` ("linf" or "l2") and radius ``eps`` in pixel space; ``steps``
            iterations; ``step`` the per-step move (linf: each pixel by it; l2: a step of that l2 length;
            ``step_size`` None -> 2.5 * eps / steps); ``random_start`` starts each restart from a random point
            of the ball (else from the clean image, moved by 0.001 * N(0, 1) when the objective is stationary
            there); ``restarts`` independent runs, of which per sample the point with the worst retrieval outcome
            (the rank of its best positive, for objectives that report it; ties by the objective) over the clean
            image and all iterates of all restarts is returned; the highest objective for objectives without a
            gallery. Its ``seed`` is not read: ``generator`` draws the random starts.
        generator: ``torch.Generator`` for the random starts (reproducible attacks).
    """
    eps, norm, steps = check_args(images, threat.eps, threat.norm, threat.steps), threat.norm, threat.steps
    objective = as_objective(objective)
    step = threat.step
    x0 = images.detach()
    worst = WorstCase(x0)
    if threat.random_start and reports_outcome(objective):
        worst.score_clean(objective, x0)               # the clean image is a point of the ball too
    for _ in range(int(threat.restarts)):
        x = start_point(objective, x0, eps, norm, threat.random_start, generator)
        for _ in range(int(steps)):
            loss, grad = loss_and_grad(objective, x)
            worst.update(loss, x, outcome(objective))  # the loss and rank of this iterate, already paid for
            x = project_image(x + step * ascent_direction(grad, norm), x0, eps, norm)
        worst.score(objective, x)
    return worst.x


SPEC = register(AttackSpec(
    "pgd", "white-box", pgd, uses=("norm", "eps", "steps", "step_size", "restarts", "random_start", "seed"),
    label="PGD", checks=("bounds", "convergence", "reference"), reference=3, fn=pgd))
