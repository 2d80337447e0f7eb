"""Evaluation protocols: named presets that set every knob of a published evaluation protocol.

A ``Protocol`` names the evaluation settings one published table was measured under (the attacks, their
iterations and step, the radii, the norm, the samples per set, AutoAttack's per-sample worst, the logit scale
the cross-entropy attacks score with) and records the settings an evaluation does not set (the few-shot
splits).
``PROTOCOLS`` holds the declared presets (``robustvlm``, ``tecoa``, ``fewshot``; ``advlora list protocols``);
``load_protocol`` reads a declared name or a user's YAML file with the same fields. ``advlora eval --protocol``
applies one (``KNOBS``: which flag each field sets) and every results file records its name, or ``custom``
when none was given (docs/evaluation.md, "Protocols").

Where each setting comes from: docs/evaluation.md, "Protocols".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from advlora.config import load_yaml
from advlora.declarations import Declarations
from advlora.errors import AdvloraError

#: the protocol a run without ``--protocol`` records
CUSTOM = "custom"

#: protocol field -> (the argument of ``advlora eval`` it sets, its flag)
KNOBS: dict[str, tuple[str, str]] = {
    "attacks": ("attacks", "--attacks"), "eps": ("eps", "--eps"), "norm": ("norm", "--norm"),
    "steps": ("steps", "--attack-steps"), "step_size": ("step_size", "--step-size"),
    "restarts": ("restarts", "--restarts"), "limit": ("limit", "--limit"), "ensemble": ("ensemble", "--ensemble"),
    "logit_scale": ("logit_scale", "--logit-scale"),
}


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol. The fields of ``KNOBS`` set the run (None: the preset leaves that flag alone;
    ``logit_scale``: the cross-entropy attacks score ``logit_scale`` x cosine, ``--logit-scale``); ``shots``
    and ``seeds`` are recorded with the results, not applied by ``advlora eval`` (the splits belong to the
    training that made the adapter; ``advlora protocol few-shot`` runs them)."""

    name: str
    doc: str = ""
    attacks: tuple[str, ...] = ()
    eps: str | None = None
    norm: str | None = None
    steps: int | None = None
    step_size: str | None = None
    restarts: int | None = None
    limit: int | None = None
    ensemble: bool | None = None
    logit_scale: float | None = None
    shots: tuple[int, ...] = ()
    seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise AdvloraError(f"a protocol needs a name, got {self.name!r}")
        for f in ("steps", "restarts", "limit"):
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise AdvloraError(f"protocol {self.name}: {f} must be an integer >= 1, got {v!r}")
        object.__setattr__(self, "attacks", tuple(self.attacks))
        object.__setattr__(self, "shots", tuple(self.shots))
        object.__setattr__(self, "seeds", tuple(self.seeds))

    def settings(self) -> dict[str, Any]:
        """Every field but the name and the description that the protocol sets (None and empty left out)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if k not in ("name", "doc") and v not in (None, ())}

    def values(self) -> dict[str, Any]:
        """The value of each argument of ``advlora eval`` the protocol sets (``KNOBS``), as the flag parses it."""
        out = {}
        for field, (dest, _) in KNOBS.items():
            v = getattr(self, field)
            if v in (None, ()):
                continue
            out[dest] = ",".join(v) if field == "attacks" else v
        return out

    def summary(self) -> str:
        """One line: the description, then the settings."""
        text = ", ".join(f"{k} {','.join(map(str, v)) if isinstance(v, list) else v}"
                         for k, v in self.settings().items())
        return f"{self.doc} [{text}]" if self.doc else f"[{text}]"


#: the declared presets (``advlora list protocols``)
PROTOCOLS: Declarations[Protocol] = Declarations("protocol")

PROTOCOLS.register(Protocol(
    name="robustvlm",
    doc="RobustVLM / LEAF zero-shot: AutoAttack's APGD-CE + APGD-T, Square as the black-box check",
    attacks=("apgd", "apgd-t", "square"), eps="1/255,2/255,4/255", norm="linf", steps=100, restarts=1,
    limit=1000, ensemble=True, logit_scale=100.0))
PROTOCOLS.register(Protocol(
    name="tecoa",
    doc="TeCoA-style: PGD-100 at 1/255, step 1/255 (the authors' --test_stepsize)",
    attacks=("pgd",), eps="1/255", norm="linf", steps=100, step_size="1/255", restarts=1))
PROTOCOLS.register(Protocol(
    name="fewshot",
    doc="few-shot PEFT (CoOp splits; FAP, AdvCLIP-LoRA): PGD-100 at 1/255, step 1/255",
    attacks=("pgd",), eps="1/255", norm="linf", steps=100, step_size="1/255", restarts=1,
    shots=(1, 2, 4, 8, 16), seeds=(1, 2, 3)))


def is_file_spec(spec: str) -> bool:
    """Whether ``--protocol`` names a YAML file (a ``.yaml``/``.yml`` name or an existing file) and not a preset."""
    return spec.endswith((".yaml", ".yml")) or Path(spec).is_file()


def load_protocol(spec: str) -> Protocol:
    """The declared preset ``spec``, or the protocol of the YAML file ``spec`` (the fields of ``Protocol``; the
    name defaults to the file's stem). An unknown name, a missing file or an unknown field is one
    ``AdvloraError`` line."""
    if not is_file_spec(spec):
        return PROTOCOLS.get(spec)
    path = Path(spec)
    if not path.is_file():
        raise AdvloraError(f"--protocol {spec}: no such file")
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise AdvloraError(f"--protocol {spec}: a protocol file is a mapping of the fields "
                           f"{', '.join(f.name for f in fields(Protocol))}")
    known = {f.name for f in fields(Protocol)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise AdvloraError(f"--protocol {spec}: unknown field(s) {', '.join(unknown)} "
                           f"(known: {', '.join(sorted(known))})")
    data = {**data, "name": str(data.get("name") or path.stem)}
    if isinstance(data.get("attacks"), str):
        data["attacks"] = [a.strip() for a in data["attacks"].split(",") if a.strip()]
    if isinstance(data.get("eps"), list):
        data["eps"] = ",".join(str(e) for e in data["eps"])
    for key in ("eps", "step_size"):      # a YAML number is a radius as the flag spells it
        if isinstance(data.get(key), (int, float)) and not isinstance(data.get(key), bool):
            data[key] = str(data[key])
    try:
        return Protocol(**data)
    except TypeError as e:
        raise AdvloraError(f"--protocol {spec}: {e}") from None


def record(protocol: Protocol | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a results file writes under ``protocol``: its ``name`` (``custom`` without one), its ``settings``,
    and the ``overrides`` (flag -> value) the user gave over it (empty: the protocol as declared)."""
    if protocol is None:
        return {"name": CUSTOM, "settings": {}, "overrides": {}}
    return {"name": protocol.name, "settings": protocol.settings(), "overrides": dict(overrides or {})}


__all__ = ["CUSTOM", "KNOBS", "PROTOCOLS", "Protocol", "is_file_spec", "load_protocol", "record"]
