"""Transfer attack: craft adversarial images on a surrogate model, evaluate them on the target.

Threat model: whatever the base attack's is (default PGD, linf or l2, pixel space [0, 1]); the target model
is never queried while crafting (a black-box, zero-query attack; Papernot et al. 2016, arXiv 1605.07277).
``images`` (B, ...) in [0, 1]. The objective passed in must be built on the surrogate model
(e.g. ``objectives.contrastive(surrogate, surrogate_text_features, positives)``); evaluating the result on the
target is the caller's job (``advlora.evaluation.robust.evaluate_robust(..., surrogate=...)`` does it).
"""
from __future__ import annotations

import torch

from advlora.attacks._utils import Objective
from advlora.attacks.apgd import apgd
from advlora.attacks.fgsm import fgsm
from advlora.attacks.pgd import pgd
from advlora.attacks.registry import AttackSpec, register
from advlora.attacks.threat import ThreatModel
from advlora.errors import choices_error

BASES = {"pgd": pgd, "fgsm": fgsm, "apgd": apgd}


def transfer(surrogate_objective: Objective, images: torch.Tensor, threat: ThreatModel, *, base: str = "pgd",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the white-box ``base`` attack ("pgd", "fgsm", "apgd") under ``threat`` on the surrogate's objective;
    returns (B, ...) adversarial images in [0, 1], to be scored on the target."""
    if base not in BASES:
        raise choices_error("transfer base attack", base, BASES)
    return BASES[base](surrogate_objective, images, threat, generator=generator)


SPEC = register(AttackSpec("transfer", "transfer", transfer,
                           uses=("norm", "eps", "steps", "step_size", "restarts", "random_start", "seed"),
                           label="transfer", line_label="transfer(PGD on surrogate)", line_keys=("gallery",),
                           checks=("bounds",), fn=transfer))
