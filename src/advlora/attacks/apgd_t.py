"""Targeted APGD ("APGD-T", Croce and Hein 2020, arXiv 2003.01690) for retrieval: APGD towards each of the top-T
clean negative captions of every image with a scale-invariant targeted margin (AutoAttack's targeted DLR
adapted to a caption gallery, ``objectives.TargetedDLR``), keeping per sample the worst retrieval outcome over
all targets (T = 9 by default, as AutoAttack's standard version).

Threat model: APGD's (linf or l2 ball of radius eps in pixel space [0, 1], per-sample perturbations); cost T
times APGD's (steps + 1 forward+backward per restart and target, plus one forward per target to score it).
"""
from __future__ import annotations

import torch

from advlora.attacks._utils import WorstCase, check_args
from advlora.attacks.apgd import apgd
from advlora.attacks.registry import AttackSpec, register


def apgd_targeted(family, images: torch.Tensor, *, eps: float | str, steps: int = 10, norm: str = "linf",
                  restarts: int = 1, random_start: bool = True, targets: int = 9,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """APGD on ``family.target(j)`` for j < min(targets, family.n_targets); returns (B, ...) in [0, 1], per
    sample the point with the worst outcome (rank of the best positive, then the targeted margin) over the clean
    image and every target's result.

    ``family``: an ``objectives.TargetedDLR`` (``target(j)`` -> objective, ``n_targets``).
    """
    eps = check_args(images, eps, norm, steps)
    x0 = images.detach()
    worst = WorstCase(x0)
    n = min(int(targets), int(family.n_targets))
    if n == 0:
        return x0.clone()
    worst.score(family.target(0), x0)
    for j in range(n):
        objective = family.target(j)
        adv = apgd(objective, x0, eps=eps, steps=steps, norm=norm, restarts=restarts, random_start=random_start,
                   generator=generator)
        worst.score(objective, adv)
    return worst.x


def _run(family, images: torch.Tensor, threat, *, generator: torch.Generator | None = None,
         targets: int = 9) -> torch.Tensor:
    return apgd_targeted(family, images, eps=float(threat.eps), steps=threat.steps, norm=threat.norm,
                         restarts=threat.restarts, random_start=threat.random_start, targets=targets,
                         generator=generator)


SPEC = register(AttackSpec("apgd-t", "white-box", _run, uses=("norm", "eps", "steps", "restarts", "random_start",
                                                               "seed"),
                           label="APGD-T", options={"targets": 9}, objective="dlr-targeted",
                           checks=("bounds", "reference"), reference=1))
