"""The attack registry: every attack declares itself once, in its own module of ``advlora.attacks``.

An ``AttackSpec`` says what an attack is (its ``kind``), how it is run from a ``ThreatModel`` and its own
options, which ``ThreatModel`` fields it reads, how its threat-model line reads, which sanity checks apply and,
for an attack that is another one on a fixed objective (``apgd-margin``), that objective. ``evaluate_robust``,
the sanity checks, the grid spec, the summary, the report and the CLI read these declarations; nothing else
lists attack names. ``advlora.attacks`` imports every module of the package, so a new module that calls
``register`` is found without editing any other file (docs/contracts.md, "Adding an attack").

Kinds and the call each ``run`` implements (images in pixel space [0, 1], per-sample perturbations):
- ``white-box`` / ``black-box``: ``run(objective, images, threat, *, generator, **options) -> images``;
- ``transfer``: the same call, with ``objective`` built on the surrogate model by the caller;
- ``text``: ``run(text_objective, captions, threat, *, generator, **options) -> captions``;
- ``joint``: ``run(joint.Pairs(model, captions, owner), images, threat, *, generator, **options) -> (images,
  captions)``;
- ``suite``: no ``run``; ``members`` (``SuiteMember``) are run as attacks of their own and the suite's result is
  the per-sample worst over them (``standard``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from advlora.declarations import Declarations
from advlora.errors import AdvloraError, choices_error

#: a ``advlora.attacks.threat.ThreatModel`` (not imported: threat.py reads this registry to describe lines)
ThreatModel = Any

KINDS = ("white-box", "black-box", "transfer", "text", "joint", "suite")
#: kinds that perturb images with ``run(objective, images, threat, ...)``
IMAGE_KINDS = ("white-box", "black-box", "transfer")
#: ThreatModel fields an attack may read, in the order its threat-model line names them
FIELDS = ("norm", "eps", "steps", "step_size", "restarts", "random_start", "seed")
#: sanity checks an attack can opt into (``advlora.evaluation.sanity``); ``robust_le_clean`` applies to all;
#: ``versus_iterative``: a one-step attack, which must not beat the iterative (``convergence``) ones
CHECKS = ("bounds", "convergence", "versus_white_box", "reference", "versus_iterative")

#: context keys a threat-model line may name (besides the attack's own options)
LINE_KEYS = ("objective", "gallery")


@dataclass(frozen=True)
class SuiteMember:
    """One attack of a suite: registered ``attack`` run under the suite's threat model with ``changes`` (e.g.
    ``{"steps": 100}``), its own ``objective`` (None: the attack's or the evaluation's) and ``options``;
    ``needs_itm``: run only on models with an ITM head (BLIP's re-rank objective); ``eot``: gradients averaged
    over this many calls per step (expectation over transformation, for randomized models)."""

    label: str
    attack: str
    objective: str | None = None
    changes: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    needs_itm: bool = False
    eot: int = 1

    def budget(self, threat: ThreatModel) -> str:
        """``APGD steps=100 objective=contrastive``: what this member spends, for the suite's line."""
        spec = get(self.attack)
        th = threat.replace(**self.changes)
        parts = [spec.line_label]
        if "steps" in spec.uses:
            parts.append(f"steps={th.steps}")
        if "restarts" in spec.uses:
            parts.append(f"restarts={th.restarts}")
        parts += [f"{k}={v}" for k, v in spec.resolve_options(self.options).items()]
        obj = self.objective or spec.objective
        if obj:
            parts.append(f"objective={obj}")
        if self.eot > 1:
            parts.append(f"EOT={self.eot}")
        return " ".join(parts)


@dataclass(frozen=True)
class AttackSpec:
    """One attack's declaration.

    Attributes:
        name: the name users type (``--attack pgd``).
        kind: one of ``KINDS``.
        run: the call described in the module docstring for ``kind``.
        uses: the ``ThreatModel`` fields the attack reads (its line names them, see ``line``).
        label: display name in tables (``PGD``; a table adds ``-steps`` when ``steps`` is used).
        line_label: the name in its threat-model line (default ``label``).
        options: the attack's own options and their defaults (Square's ``queries``).
        line_keys: which of ``LINE_KEYS`` its threat-model line names.
        checks: sanity checks that apply (``CHECKS``).
        objective: a fixed image objective (``apgd-margin``: ``margin``); None: the evaluation's objective.
        reference: preference as the white-box reference of the sanity checks (higher first).
        fn: the plain attack function (the public ``advlora.attacks.<name>``), for reference.
        training_run: the variant training runs, with ``run``'s call (None: ``run``): FGSM's fast adversarial
            training step from a random start, Square's query budget from the threat's ``steps``.
        training_steps: the steps a training threat line names (None: the threat's; FGSM: 1).
        describe: ``describe(threat, options, context) -> line``; None: ``line``.
        members: a suite's attacks (kind ``suite``).
        rand_members: what a suite runs instead on a randomized model (AutoAttack's ``rand`` version).
        norms: the threat-model norms the attack implements (None: every one); a suite runs under a norm
            when each of its ``members`` does (``check_norm``).
    """

    name: str
    kind: str
    run: Callable[..., Any] | None
    uses: tuple[str, ...] = ("norm", "eps")
    label: str = ""
    line_label: str = ""
    options: dict = field(default_factory=dict)
    line_keys: tuple[str, ...] = LINE_KEYS
    checks: tuple[str, ...] = ()
    objective: str | None = None
    reference: int = 0
    fn: Callable[..., Any] | None = None
    describe: Callable[..., str] | None = None
    members: tuple[SuiteMember, ...] = ()
    rand_members: tuple[SuiteMember, ...] = ()
    norms: tuple[str, ...] | None = None
    training_run: Callable[..., Any] | None = None
    training_steps: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise choices_error("attack kind", self.kind, KINDS)
        if (self.kind == "suite") != (self.run is None) or (self.kind == "suite") != bool(self.members):
            raise AdvloraError(f"attack {self.name!r}: a suite has members and no run; any other attack a run")
        for f in self.uses:
            if f not in FIELDS:
                raise choices_error(f"ThreatModel field of attack {self.name!r}", f, FIELDS)
        for c in self.checks:
            if c not in CHECKS:
                raise choices_error(f"sanity check of attack {self.name!r}", c, CHECKS)
        for k in self.line_keys:
            if k not in LINE_KEYS:
                raise choices_error(f"threat-line key of attack {self.name!r}", k, LINE_KEYS)
        if not self.label:
            object.__setattr__(self, "label", self.name)
        if not self.line_label:
            object.__setattr__(self, "line_label", self.label)

    def missing_norm(self, norm: str) -> list[str]:
        """The attacks (this one, or a suite's members) that do not implement ``norm``; empty when it runs."""
        if self.kind == "suite":
            return [m.attack for m in self.members if get(m.attack).missing_norm(norm)]
        return [] if self.norms is None or norm in self.norms else [self.name]

    @property
    def perturbs_images(self) -> bool:
        return self.kind in IMAGE_KINDS or self.kind in ("joint", "suite")

    def resolve_options(self, given: dict | None = None) -> dict:
        """The attack's options: its defaults updated by those of ``given`` it declares (others are ignored:
        one option dict can serve several attacks)."""
        return {**self.options, **{k: v for k, v in (given or {}).items() if k in self.options}}

    @property
    def trainable(self) -> bool:
        """Whether training can run this attack on its own objective: an image attack of ``run(objective,
        images, threat)`` whose objective is not fixed by the declaration."""
        return self.kind in IMAGE_KINDS and self.objective is None and self.run is not None

    def attack(self, objective, images, threat: ThreatModel, *, generator=None, options: dict | None = None,
               training: bool = False):
        """The one way to run this attack, from evaluation and from training: ``run`` (``training``: its
        ``training_run`` when declared) on ``objective`` and ``images`` under ``threat`` with the options it
        declares (``resolve_options``: the defaults updated by those of ``options`` it declares)."""
        run = self.training_run if training and self.training_run is not None else self.run
        if run is None:
            raise AdvloraError(f"attack {self.name!r} is a suite: its members run, not it")
        return run(objective, images, threat, generator=generator, **self.resolve_options(options))

    def line(self, threat: ThreatModel, options: dict | None = None, context: dict | None = None) -> str:
        """The threat-model line written beside this attack's numbers, e.g.
        ``linf eps=4/255 PGD steps=10 step=1/255 restarts=1 random-start objective=contrastive gallery=full``.

        ``context`` holds the evaluation's ``objective`` and ``gallery`` (``line_keys`` says which are named).
        """
        opts = self.resolve_options(options)
        ctx = dict(context or {})
        if self.objective is not None:
            ctx["objective"] = self.objective
        if self.describe is not None:
            return self.describe(threat, opts, ctx)
        if self.kind == "suite":
            members = [m.budget(threat) for m in self.members if ctx.get("itm") or not m.needs_itm]
            return threat.line(f"{self.label}(per-sample worst by i2t rank of: {'; '.join(members)})", self.uses)
        shown = opts if options is not None else {}   # a line without options given names no option
        label = " ".join([self.line_label, *(f"{k}={v}" for k, v in shown.items())])
        return threat.line(label, self.uses, **{k: ctx.get(k) for k in self.line_keys})

    def table_name(self, steps: int | None = None) -> str:
        """``PGD-10`` for an attack that uses ``steps``, else its label (``FGSM``, ``Square``)."""
        return f"{self.label}-{steps}" if steps and "steps" in self.uses else self.label


#: every declared attack; ``register`` (a module of ``advlora.attacks`` calls it at import: a name is declared
#: once), ``registered`` (a throw-away attack for a ``with`` block), ``get`` (an unknown name: one error line
#: listing the declared ones), ``find`` and ``unregister`` are its methods
DECLARED: Declarations[AttackSpec] = Declarations("attack")
register, unregister, registered, get, find = (DECLARED.register, DECLARED.unregister, DECLARED.registered,
                                               DECLARED.get, DECLARED.find)


def names(*kinds: str) -> tuple[str, ...]:
    """Registered names (of ``kinds`` when given), in registration order."""
    return tuple(n for n, s in DECLARED.items.items() if not kinds or s.kind in kinds)


def specs(*kinds: str) -> tuple[AttackSpec, ...]:
    return tuple(DECLARED.items[n] for n in names(*kinds))


def check_names(attacks: list[str] | tuple[str, ...] | str) -> list[str]:
    """A comma string or list of attack names -> the list, each checked against the registry."""
    out = [a.strip() for a in attacks.split(",") if a.strip()] if isinstance(attacks, str) else list(attacks)
    for a in out:
        get(a)
    return out


def check_norm(attacks: list[str] | tuple[str, ...] | str, norm: str) -> None:
    """Refuse, in one ``AdvloraError`` line, an attack under a norm it (a suite: one of its members) does not
    implement: before any model loads, not after the members before it have run."""
    for a in check_names(attacks):
        spec = get(a)
        missing = spec.missing_norm(norm)
        if missing:
            what = f"the {a} suite's member {', '.join(missing)}" if spec.kind == "suite" else a
            runs = [n for n in names("white-box") if not get(n).missing_norm(norm)]
            raise AdvloraError(f"--norm {norm}: {what} implements only {', '.join(get(missing[0]).norms or ())} "
                               f"(use --norm {(get(missing[0]).norms or ('linf',))[0]}, or {norm} attacks such as "
                               f"--attacks {','.join(runs[:3])})")


def result_key(attack: str, eps: str) -> str:
    """The key of one attack at one eps in results and summaries: ``pgd@4/255``."""
    return f"{attack}@{eps}"


def split_key(key: str) -> tuple[str, str]:
    """``pgd@4/255`` -> ``("pgd", "4/255")``."""
    attack, _, eps = key.partition("@")
    return attack, eps
