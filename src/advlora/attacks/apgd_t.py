"""Targeted APGD ("APGD-T", Croce and Hein 2020, arXiv 2003.01690) for retrieval: APGD towards each of the top-T
clean negative captions of every image with a scale-invariant targeted margin (AutoAttack's targeted DLR
adapted to a caption gallery, ``objectives.TargetedDLR``), keeping per sample the worst retrieval outcome over
all targets (T = 9 by default, as AutoAttack's standard version).

The targets are a batch dimension: the B images are repeated T times (target-major) and run through APGD in
one pass of T * B rows (``targets_per_pass`` at a time when memory is short; a CUDA out-of-memory halves it).
Random starts come from per-(sample, target) streams (``seeding.SampleGenerators.per_target``), so the result
is the same whether the targets run together or one after another.

Threat model: APGD's (linf or l2 ball of radius eps in pixel space [0, 1], per-sample perturbations); cost T
times APGD's (steps forward+backward and one forward per restart and target); the clean image's outcome comes
from the clean scores the targets were chosen with.
"""
from __future__ import annotations

import torch

from advlora.attacks._utils import WorstCase, check_args
from advlora.attacks.apgd import apgd_into
from advlora.attacks.registry import AttackSpec, register
from advlora.attacks.seeding import is_per_sample
from advlora.attacks.stopping import finished
from advlora.attacks.threat import ThreatModel


def apgd_targeted(family, images: torch.Tensor, threat: ThreatModel, *, targets: int = 9,
                  generator: torch.Generator | None = None, targets_per_pass: int | None = None) -> torch.Tensor:
    """APGD on ``family.target(j)`` for j < min(targets, family.n_targets); returns (B, ...) in [0, 1], per
    sample the point with the worst outcome (rank of the best positive, then the targeted margin) over the clean
    image and every target's iterates.

    ``family``: an ``objectives.TargetedDLR`` (``target(j)``, ``targets_of(js)``, ``n_targets``).
    ``threat``: APGD's budget (norm, eps, steps, restarts, random start), read whole.
    ``targets_per_pass``: targets run together in one batch (None: all of them).
    """
    check_args(images, threat.eps, threat.norm, threat.steps)
    x0 = images.detach()
    worst = WorstCase(x0)
    n = min(int(targets), int(family.n_targets))
    if n == 0:
        return x0.clone()
    worst.score_clean(family.target(0), x0)
    per_pass = n if targets_per_pass is None else max(1, min(int(targets_per_pass), n))
    j = 0
    while j < n and not finished(family):
        js = list(range(j, min(j + per_pass, n)))
        try:
            _targets_pass(worst, family, x0, js, threat, generator)
        except torch.cuda.OutOfMemoryError:
            if per_pass == 1:
                raise
            torch.cuda.empty_cache()
            per_pass = max(1, per_pass // 2)
            continue
        j += len(js)
    return worst.x


def _targets_pass(worst: WorstCase, family, x0: torch.Tensor, js: list[int], budget: ThreatModel,
                  gen: torch.Generator | None) -> None:
    """APGD on the targets ``js`` as one batch of len(js) * B rows; each row's worst competes for its image."""
    b = x0.shape[0]
    if is_per_sample(gen):
        gen = gen.per_target(js)
    rows = WorstCase(x0.repeat(len(js), *([1] * (x0.dim() - 1))))
    rows = apgd_into(rows, family.targets_of(js), rows.x.clone(), budget, gen)
    for a in range(len(js)):
        sl = slice(a * b, (a + 1) * b)
        worst.update(rows.loss[sl], rows.x[sl], rows.rank[sl])


SPEC = register(AttackSpec("apgd-t", "white-box", apgd_targeted,
                           uses=("norm", "eps", "steps", "restarts", "random_start", "seed"),
                           label="APGD-T", options={"targets": 9}, objective="dlr-targeted",
                           checks=("bounds", "reference"), reference=1))
