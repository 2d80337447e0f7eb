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
from advlora.errors import AdvloraError


def pgd(objective: Objective, images: torch.Tensor, *, eps: float | str, step_size: float | None = None,
        steps: int = 10, norm: str = "linf", random_start: bool = True, restarts: int = 1,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Maximise ``objective`` within the eps ball; returns adversarial images (B, ...) in [0, 1].

    Args:
        objective: ``objective(x) -> Tensor[B]``, the per-sample loss to maximise (see ``advlora.attacks.objectives``).
        images: clean inputs (B, ...) in [0, 1].
        eps: radius in pixel space ("4/255" or a float).
        step_size: per-step move (linf: each pixel by step_size; l2: a step of that l2 length);
            None -> 2.5 * eps / steps.
        steps: iterations (>= 1).
        norm: "linf" or "l2".
        random_start: start each restart from a random point of the ball (else from the clean image, moved by
            0.001 * N(0, 1) when the objective is stationary there).
        restarts: independent runs; per sample, the point with the worst retrieval outcome (the rank of its best
            positive, for objectives that report it; ties by the objective) over the clean image and all
            iterates of all restarts is returned; the highest objective for objectives without a gallery.
        generator: ``torch.Generator`` for the random starts (reproducible attacks).
    """
    eps = check_args(images, eps, norm, steps)
    objective = as_objective(objective)
    if isinstance(restarts, bool) or int(restarts) != restarts or restarts < 1:
        raise AdvloraError(f"restarts must be an integer >= 1, got {restarts!r}")
    step = 2.5 * eps / steps if step_size is None else float(step_size)
    if step < 0:
        raise AdvloraError(f"step size must be >= 0, got {step_size!r}")
    x0 = images.detach()
    worst = WorstCase(x0)
    if random_start and reports_outcome(objective):
        worst.score_clean(objective, x0)               # the clean image is a point of the ball too
    for _ in range(int(restarts)):
        x = start_point(objective, x0, eps, norm, random_start, generator)
        for _ in range(int(steps)):
            loss, grad = loss_and_grad(objective, x)
            worst.update(loss, x, outcome(objective))  # the loss and rank of this iterate, already paid for
            x = project_image(x + step * ascent_direction(grad, norm), x0, eps, norm)
        worst.score(objective, x)
    return worst.x


def _run(objective: Objective, images: torch.Tensor, threat, *, generator: torch.Generator | None = None
         ) -> torch.Tensor:
    return pgd(objective, images, eps=float(threat.eps), step_size=threat.step, steps=threat.steps,
               norm=threat.norm, random_start=threat.random_start, restarts=threat.restarts, generator=generator)


SPEC = register(AttackSpec(
    "pgd", "white-box", _run, uses=("norm", "eps", "steps", "step_size", "restarts", "random_start", "seed"),
    label="PGD", checks=("bounds", "convergence", "reference"), reference=3, fn=pgd))
