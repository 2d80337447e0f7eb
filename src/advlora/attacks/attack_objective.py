"""What an attack reads from the objective it maximises: the declared protocol every image objective follows.

An image objective is called on a batch, ``objective(images (B, ...)) -> loss (B,)`` to maximise, and declares
the attributes of ``AttackObjective`` (their defaults are those of a plain loss function):

- ``eot``: calls per gradient (> 1 on a randomized model: the gradient is the mean, expectation over
  transformation);
- ``stationary``: the loss is 0 with zero gradient at the clean image (an attack without random start then
  starts 0.001 * N(0, 1) off it, as TRADES does);
- ``ranked``: the objective reports a retrieval outcome, so the clean image competes for the worst case even
  under a random start;
- ``last_rank``: that outcome of the last call, per sample the rank of its best positive (None: no gallery);
- ``clean_outcome``: (loss, rank) at the clean images when known without a forward;
- ``finished``: every row is done (an attack may end early, ``advlora.attacks.stopping``);
- ``selectable`` / ``select(rows)``: the objective of some rows of the batch alone.

A targeted family (APGD-T's) is a ``TargetFamily``: ``n_targets``, ``target(j)``, ``targets_of(js)`` and
``finished``. ``Wrapper`` forwards every declared attribute to the objective it wraps (``ATTRIBUTES``), so a
wrapper overrides only what it changes; ``as_objective`` declares a plain function (a lambda in a test, a
training closure) with the defaults.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from advlora.errors import AdvloraError

#: the attributes an attack reads from an objective (``Wrapper`` forwards each of them)
ATTRIBUTES = ("eot", "stationary", "ranked", "last_rank", "clean_outcome", "finished", "selectable")


class AttackObjective:
    """An image objective: ``__call__(images) -> loss (B,)`` plus the declared attributes (module docstring)."""

    eot: int = 1
    stationary: bool = False
    ranked: bool = False
    last_rank: torch.Tensor | None = None
    clean_outcome: tuple[torch.Tensor, torch.Tensor] | None = None
    finished: bool = False
    selectable: bool = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def select(self, rows: torch.Tensor) -> AttackObjective:
        """The objective of the batch's ``rows`` alone (only where ``selectable``)."""
        raise AdvloraError("this objective cannot be restricted to rows of its batch")


class TargetFamily:
    """A family of objectives, one per target (APGD-T's): ``target(j)``, all ``targets_of(js)`` at once for images
    repeated target-major, ``n_targets`` targets, and ``finished`` (every image done)."""

    n_targets: int = 0
    finished: bool = False

    def target(self, j: int) -> AttackObjective:
        raise NotImplementedError

    def targets_of(self, js) -> AttackObjective:
        raise NotImplementedError


class Function(AttackObjective):
    """A plain loss function declared as an objective (the defaults, or those given)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], **declared: Any) -> None:
        unknown = set(declared) - set(ATTRIBUTES)
        if unknown:
            raise AdvloraError(f"unknown objective attribute(s) {sorted(unknown)}; declared: {', '.join(ATTRIBUTES)}")
        self.fn = fn
        for k, v in declared.items():
            setattr(self, k, v)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)


def as_objective(objective, **declared: Any):
    """``objective`` as a declared objective: an ``AttackObjective`` or ``TargetFamily`` as it is (``declared``
    must then be empty), a plain function as a ``Function`` with ``declared`` attributes."""
    if isinstance(objective, (AttackObjective, TargetFamily)):
        if declared:
            raise AdvloraError("attributes are declared by the objective itself, not given again")
        return objective
    if not callable(objective):
        raise AdvloraError(f"an objective must be callable, got {type(objective).__name__}")
    return Function(objective, **declared)


def _forward(name: str) -> property:
    return property(lambda self: getattr(self.inner, name), doc=f"the wrapped objective's ``{name}``")


class Wrapper(AttackObjective):
    """An objective around ``inner``: every declared attribute (``ATTRIBUTES``) is the inner one's unless the
    wrapper overrides it (a class attribute, property or instance attribute of the same name)."""

    def __init__(self, inner) -> None:
        self.inner = as_objective(inner)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner(images)


for _name in ATTRIBUTES:
    setattr(Wrapper, _name, _forward(_name))


__all__ = ["ATTRIBUTES", "AttackObjective", "Function", "TargetFamily", "Wrapper", "as_objective"]
