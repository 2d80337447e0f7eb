"""Fast gradient sign method (Goodfellow et al. 2015, arXiv 1412.6572) on any per-sample objective.

Threat model: linf (one signed step of size eps) or l2 (one step of l2 length eps along the gradient), clamped
to pixel space [0, 1]. Inputs ``images`` (B, ...) in [0, 1]. One forward+backward, plus one forward to score the
step: each sample keeps the worse of the two points evaluated (by retrieval outcome, then objective), so FGSM
equals ``pgd(steps=1, step_size=eps, random_start=False)`` exactly.
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
)
from advlora.attacks.attack_objective import as_objective
from advlora.attacks.pgd import pgd
from advlora.attacks.registry import AttackSpec, register
from advlora.attacks.threat import ThreatModel


def fgsm(objective: Objective, images: torch.Tensor, threat: ThreatModel, *,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """One step of size eps along the steepest-ascent direction; returns (B, ...) in [0, 1].

    ``threat``: its norm and eps are read (FGSM takes one step of eps, whatever its steps, step size, restarts
    and random start). ``generator`` is accepted for a uniform signature and unused: FGSM is deterministic.
    """
    norm = threat.norm
    eps = check_args(images, threat.eps, norm)
    objective = as_objective(objective)
    x0 = images.detach()
    worst = WorstCase(x0)
    loss, grad = loss_and_grad(objective, x0)
    worst.update(loss, x0, outcome(objective))
    x1 = project_image(x0 + eps * ascent_direction(grad, norm), x0, eps, norm)
    worst.score(objective, x1)
    return worst.x


def _train(objective: Objective, images: torch.Tensor, threat, *, generator: torch.Generator | None = None
           ) -> torch.Tensor:
    """Training's FGSM: under a random start, fast adversarial training (Wong et al. 2020, arXiv 2001.03994):
    one step of 1.25 eps (``threat.step_size`` when set) from a uniform point of the ball; else ``fgsm``."""
    if not threat.random_start:
        return fgsm(objective, images, threat, generator=generator)
    step = 1.25 * float(threat.eps) if threat.step_size is None else threat.step_size
    return pgd(objective, images, threat.replace(step_size=step, steps=1, random_start=True, restarts=1),
               generator=generator)


def _line(threat, options: dict, context: dict) -> str:
    eps = threat.eps_text
    return threat.line(f"FGSM step={eps} no-random-start", ("norm", "eps"), objective=context.get("objective"),
                       gallery=context.get("gallery"))


SPEC = register(AttackSpec("fgsm", "white-box", fgsm, uses=("norm", "eps"), label="FGSM",
                           checks=("bounds", "reference", "versus_iterative"), fn=fgsm, describe=_line,
                           training_run=_train, training_steps=1))
