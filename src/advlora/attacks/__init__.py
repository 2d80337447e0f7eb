"""Adversarial attacks on vision-language retrieval, with the objective as a parameter.

Every image attack is a pure function ``attack(objective, images, threat, *, generator=None, **options) ->
images`` (``threat``: a ``ThreatModel``, the budget read whole) in pixel space [0, 1], per-sample perturbations,
the per-sample worst case kept over restarts:
``fgsm``, ``pgd``, ``apgd`` (Croce and Hein 2020), ``square`` (score-based, no gradient), ``transfer``
(crafted on a surrogate). Captions are attacked by ``text_attack`` and pairs jointly by ``co_attack``;
objectives live in ``advlora.attacks.objectives``.

Each attack declares itself once, in its own module, with ``registry.register(AttackSpec(...))``; importing this
package imports every module of it, so a new module is found without editing any other file.
``run_attack(name, objective, images, threat)`` runs a registered image attack; ``ATTACKS`` maps the plain image
attacks' names to their functions (for callers that build their own objective, such as training).
"""
from __future__ import annotations

import torch

from advlora.attacks import registry
from advlora.attacks._utils import attack_mode
from advlora.attacks.registry import AttackSpec, result_key
from advlora.attacks.threat import NORMS, ThreatModel, format_eps, parse_eps, parse_eps_list
from advlora.declarations import import_all
from advlora.errors import choices_error

import_all(__name__, __path__)

# the public functions, re-exported from their modules (imported above by import_all)
from advlora.attacks import objectives  # noqa: E402
from advlora.attacks.apgd import apgd  # noqa: E402
from advlora.attacks.fgsm import fgsm  # noqa: E402
from advlora.attacks.joint import Pairs, TextSide, co_attack  # noqa: E402
from advlora.attacks.pgd import pgd  # noqa: E402
from advlora.attacks.square import square  # noqa: E402
from advlora.attacks.text import text_attack  # noqa: E402
from advlora.attacks.transfer import transfer  # noqa: E402

#: image attacks with the common signature ``attack(objective, images, threat, *, generator, **options)``
ATTACKS = {s.name: s.fn for s in registry.specs() if s.trainable and s.fn is not None}


def run_attack(name: str, objective, images: torch.Tensor, threat: ThreatModel, *,
               generator: torch.Generator | None = None, **options) -> torch.Tensor:
    """Run registered image attack ``name`` on the caller's ``objective`` with the budget of ``threat`` and its own
    ``options`` (Square's ``queries``; options another attack declares are ignored). For ``transfer`` pass the
    surrogate's objective. A name that is not an image attack taking the caller's objective (an unknown one, a
    text attack, ``apgd-margin`` whose objective is fixed) is an ``AdvloraError`` listing those that are."""
    spec = registry.find(name)
    if spec is None or spec.name not in ATTACKS:
        raise choices_error("attack", name, ATTACKS)
    return spec.attack(objective, images, threat, generator=generator, options=options)


__all__ = ["ATTACKS", "AttackSpec", "NORMS", "Pairs", "TextSide", "ThreatModel", "apgd", "attack_mode", "co_attack",
           "fgsm", "format_eps", "objectives", "parse_eps", "parse_eps_list", "pgd", "registry", "result_key",
           "run_attack", "square", "text_attack", "transfer"]
