"""Adversarial attacks on vision-language retrieval, with the objective as a parameter.

Every image attack is a pure function ``attack(objective, images, *, eps, ..., generator=None) -> images`` in
pixel space [0, 1], per-sample perturbations, the per-sample worst case kept over restarts:
``fgsm``, ``pgd``, ``apgd`` (Croce and Hein 2020), ``square`` (score-based, no gradient), ``transfer``
(crafted on a surrogate). ``ATTACKS`` maps their names to the functions; ``run_attack`` calls one with a
``ThreatModel``. Captions are attacked by ``text_attack`` and pairs jointly by ``co_attack``; objectives live in
``advlora.attacks.objectives``.
"""
from __future__ import annotations

import torch

from advlora.attacks import objectives
from advlora.attacks._utils import attack_mode
from advlora.attacks.apgd import apgd
from advlora.attacks.fgsm import fgsm
from advlora.attacks.joint import co_attack
from advlora.attacks.pgd import pgd
from advlora.attacks.square import square
from advlora.attacks.text import text_attack
from advlora.attacks.threat import NORMS, ThreatModel, format_eps, parse_eps, parse_eps_list
from advlora.attacks.transfer import transfer
from advlora.errors import choices_error

#: image attacks with the common signature ``attack(objective, images, *, eps, ..., generator)``
ATTACKS = {"fgsm": fgsm, "pgd": pgd, "apgd": apgd, "square": square, "transfer": transfer}


def run_attack(name: str, objective, images: torch.Tensor, threat: ThreatModel, *,
               generator: torch.Generator | None = None, queries: int = 1000) -> torch.Tensor:
    """Call image attack ``name`` with the budget of ``threat`` (each attack takes the fields it has):
    FGSM one step of eps; PGD all fields; APGD steps/restarts/random start (own step size); Square
    ``queries``. For ``transfer`` pass the surrogate's objective (base PGD with the threat's fields)."""
    if name not in ATTACKS:
        raise choices_error("attack", name, ATTACKS)
    eps = float(threat.eps)
    if name == "fgsm":
        return fgsm(objective, images, eps=eps, norm=threat.norm, generator=generator)
    if name == "apgd":
        return apgd(objective, images, eps=eps, steps=threat.steps, norm=threat.norm, restarts=threat.restarts,
                    random_start=threat.random_start, generator=generator)
    if name == "square":
        return square(objective, images, eps=eps, queries=queries, norm=threat.norm, generator=generator)
    fn = pgd if name == "pgd" else transfer
    return fn(objective, images, eps=eps, step_size=threat.step, steps=threat.steps, norm=threat.norm,
              random_start=threat.random_start, restarts=threat.restarts, generator=generator)


__all__ = ["ATTACKS", "NORMS", "ThreatModel", "apgd", "attack_mode", "co_attack", "fgsm", "format_eps",
           "objectives", "parse_eps", "parse_eps_list", "pgd", "run_attack", "square", "text_attack", "transfer"]
