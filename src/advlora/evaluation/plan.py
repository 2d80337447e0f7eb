"""``EvalPlan``: how one robust evaluation runs its attacks, built once (from the CLI, a YAML file or the Python
API), validated when built and carried unchanged to the runners.

It holds the objective and gallery the image attacks use, every attack's own options (``attack_options``:
``{"apgd-t": {"targets": 3}}``, checked against what each attack declares in ``AttackSpec.options``; the CLI's
``--attack-option apgd-t.targets=3`` and a YAML ``attack_options:`` mapping set it, ``--square-queries`` and
``--text-budget`` are shorthands for ``square.queries`` and ``text.text_budget`` / ``joint.text_budget``), the
suite's mode (early exit at ``exit_k``, or ``exhaustive``), the data limits (batch size, Square's subset, the
sanity subset), the ITM re-rank depth, and whether the ensemble and the sanity checks run.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from advlora.attacks import image_objectives, registry
from advlora.errors import AdvloraError, choices_error
from advlora.evaluation.results import GALLERIES, check_exit_k


def _coerce(value: Any, default: Any, what: str) -> Any:
    """``value`` (a CLI string, or a YAML value) as the type of the option's ``default``."""
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return type(default)(value)
    except ValueError:
        raise AdvloraError(f"{what}: {value!r} is not a {type(default).__name__}") from None


def check_attack_options(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """``{attack: {key: value}}`` with every attack registered and every key one it declares (values as the
    type of the declared default); anything else is one ``AdvloraError`` line."""
    out: dict[str, dict[str, Any]] = {}
    for name, opts in (options or {}).items():
        spec = registry.get(name)
        if not isinstance(opts, Mapping):
            raise AdvloraError(f"attack options of {name!r} must be a mapping KEY: VALUE, got {opts!r}")
        for key, value in opts.items():
            if key not in spec.options:
                declared = ", ".join(spec.options) or "none"
                raise AdvloraError(f"attack option {name}.{key}: {name} declares no option {key!r} "
                                   f"(its options: {declared})")
            out.setdefault(name, {})[key] = _coerce(value, spec.options[key], f"attack option {name}.{key}")
    return out


def parse_attack_option(text: str) -> tuple[str, str, str]:
    """``NAME.KEY=VALUE`` (``--attack-option apgd-t.targets=3``) -> ``(name, key, value)``."""
    target, eq, value = text.partition("=")
    name, dot, key = target.strip().rpartition(".")
    if not eq or not dot or not name or not key or not value.strip():
        raise AdvloraError(f"--attack-option {text!r}: expected NAME.KEY=VALUE, e.g. apgd-t.targets=3")
    return name, key.strip(), value.strip()


def attack_options_from(texts: list[str] | tuple[str, ...] | None,
                        base: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``base`` (e.g. a YAML ``attack_options`` mapping) updated by ``--attack-option`` texts, checked."""
    out = {k: dict(v) for k, v in (base or {}).items()}
    for text in texts or ():
        name, key, value = parse_attack_option(text)
        out.setdefault(name, {})[key] = value
    return check_attack_options(out)


@dataclass(frozen=True)
class EvalPlan:
    """How ``evaluate_robust`` runs its attacks (module docstring); validated when built."""

    #: BLIP's ITM re-rank depth (-1: the default for the set's size; 0: ITC only)
    rerank_k: int | None = -1
    batch_size: int = 32
    #: run the black-box attacks on a deterministic subset of this many images (None: all)
    square_limit: int | None = None
    #: shorthands for the ``queries`` and ``text_budget`` options of the attacks that declare them
    square_queries: int = 1000
    text_budget: int = 3
    #: add the per-sample worst over the image attacks
    ensemble: bool = False
    objective: str = "contrastive"
    gallery: str = "full"
    sanity: bool = True
    sanity_limit: int = 64
    #: further options by key, for every attack that declares the key
    options: Mapping[str, Any] = field(default_factory=dict)
    #: options of one attack: ``{"apgd-t": {"targets": 3}}`` (win over ``options`` and the shorthands)
    attack_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: a suite's members attack every image (no early exit)
    exhaustive: bool = False
    #: early exit: the i2t rank at which an image is done (None: the largest reported k)
    exit_k: int | None = None
    #: the cross-entropy objective attacks logit_scale x cosine instead of the model's own scale (a protocol's
    #: fixed logits: RobustVLM's 100); recorded as "logit_scale" and in the threat-model line
    logit_scale: float | None = None

    def __post_init__(self) -> None:
        image_objectives.check_objective(self.objective)
        if self.gallery not in GALLERIES:
            raise choices_error("gallery", self.gallery, GALLERIES)
        object.__setattr__(self, "exit_k", check_exit_k(self.exit_k))
        if self.square_limit is not None and self.square_limit < 1:
            raise AdvloraError(f"--square-limit must be >= 1, got {self.square_limit}")
        if isinstance(self.square_queries, bool) or not isinstance(self.square_queries, int) \
                or self.square_queries < 1:
            raise AdvloraError(f"--square-queries must be an integer >= 1, got {self.square_queries!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise AdvloraError(f"batch size must be an integer >= 1, got {self.batch_size!r}")
        if self.logit_scale is not None and not self.logit_scale > 0:
            raise AdvloraError(f"--logit-scale must be > 0, got {self.logit_scale}")
        object.__setattr__(self, "options", dict(self.options or {}))
        object.__setattr__(self, "attack_options", check_attack_options(self.attack_options))

    @classmethod
    def of(cls, plan: EvalPlan | None = None, **settings: Any) -> EvalPlan:
        """``plan`` as it is, or one built from ``settings`` (``EvalPlan``'s fields; not both)."""
        if plan is None:
            return cls(**settings)
        if settings:
            raise AdvloraError(f"give an EvalPlan or its settings, not both ({', '.join(settings)})")
        return plan

    def replace(self, **changes: Any) -> EvalPlan:
        return dataclasses.replace(self, **changes)

    def options_for(self, attack: str) -> dict[str, Any]:
        """The options attack ``attack`` is given (it takes those it declares: ``AttackSpec.resolve_options``)."""
        return {"queries": self.square_queries, "text_budget": self.text_budget, **self.options,
                **self.attack_options.get(attack, {})}


__all__ = ["EvalPlan", "attack_options_from", "check_attack_options", "parse_attack_option"]
