"""Typed results: one ``Result`` per results record (``advlora.results/1``) or per published number.

The results files that ``advlora eval`` / ``advlora attack`` write (docs/evaluation.md, "Results files") are the
one source of measured numbers; ``Result.from_record`` reads one into the fields every export, table and model
card needs (model, adapter, data set, task, threat model, clean and worst-attack metrics, sanity verdict).
A ``Result`` of kind ``"reported"`` is a published number (``advlora.experiments.reported``): it carries its
source and protocol, and no table or export ever mixes it into a measured row.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlora.attacks.threat import format_eps, parse_eps
from advlora.config import load_yaml
from advlora.errors import AdvloraError
from advlora.evaluation.sweep import HEADLINE, RESULTS_SCHEMA, check_record

#: the two kinds of entry: numbers measured here, and numbers a publication reports
KINDS = ("measured", "reported")


@dataclass(frozen=True)
class Threat:
    """The threat model of a result: the norm (``linf`` / ``l2``), eps in pixel units [0, 1], its printed form
    (``4/255``) and the attack's steps (None when unknown)."""

    norm: str
    eps: float
    eps_str: str
    steps: int | None = None

    @classmethod
    def of(cls, norm: str, eps: float | str, steps: int | None = None) -> Threat:
        value = parse_eps(eps)
        return cls(norm=str(norm).lower(), eps=value, eps_str=format_eps(value), steps=steps)

    def label(self) -> str:
        return f"{self.norm} {self.eps_str}"


@dataclass(frozen=True)
class Result:
    """One evaluation's numbers (metrics in percent, as advlora writes them).

    Attributes:
        kind: ``"measured"`` (a results file) or ``"reported"`` (a published number).
        model: the model id as evaluated (a hub id, a folder, a published model's name).
        task: ``retrieval`` or ``classification``.
        data: the ``--data`` value (the data set's name for a reported entry).
        dataset: the data set's own name.
        headline: the metric a table leads with (``r_mean`` or ``top1``).
        clean: clean metrics.
        robust: the metrics under the worst attack at ``threat``, or None (clean only).
        threat: the threat model, or None (clean only).
        attack: the worst attack (``pgd@4/255``; a reported entry's attack as its source names it), or None.
        adapter, method, objective: the adapter folder, its method and training objective (None when unknown).
        n_images: images evaluated (None when unknown).
        sanity: the sanity verdict, or None.
        source, protocol: a reported entry's citation and evaluation protocol (None for measured ones).
        record: the results record it was read from (measured entries; not compared).
    """

    kind: str
    model: str
    task: str
    data: str
    dataset: str
    headline: str
    clean: dict[str, float]
    robust: dict[str, float] | None = None
    threat: Threat | None = None
    attack: str | None = None
    adapter: str | None = None
    method: str | None = None
    objective: str | None = None
    n_images: int | None = None
    sanity: str | None = None
    source: str | None = None
    protocol: str | None = None
    record: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AdvloraError(f"result kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.task not in HEADLINE:
            raise AdvloraError(f"result task {self.task!r} is not one of {', '.join(HEADLINE)}")

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Result:
        """The ``Result`` of a valid results record (``check_record``); an invalid one is one error line."""
        problems = check_record(record)
        if problems:
            raise AdvloraError(f"not a results record: {'; '.join(problems)}")
        th = record["threat"]
        robust = record["robust"]
        return cls(kind="measured", model=record["model"] or "", task=record["task"], data=str(record["data"]),
                   dataset=record["dataset"] or str(record["data"]), headline=record["headline"],
                   clean=dict(record["clean"]), robust=None if robust is None else dict(robust["metrics"]),
                   threat=None if th is None else Threat(norm=th["norm"], eps=float(th["eps"]),
                                                         eps_str=th["eps_str"], steps=th.get("steps")),
                   attack=None if robust is None else robust["attack"], adapter=record["adapter"],
                   method=record["method"], objective=record["objective"], n_images=record["n_images"],
                   sanity=(record["sanity"] or {}).get("verdict"), record=record)

    @property
    def attack_name(self) -> str | None:
        """The worst attack without its eps (``pgd``)."""
        return None if self.attack is None else self.attack.split("@")[0]

    def name(self) -> str:
        """The model as one name: the model, then the adapter folder's name when there is one."""
        base = self.model or "-"
        return base if not self.adapter else f"{base}+{Path(str(self.adapter)).name}"


#: the protocol name of the record read from a training run's final test (``training_run_record``)
TRAINING_TEST = "advlora train: final test"


def training_run_record(metrics_file: Path) -> dict[str, Any] | None:
    """The results record of a training run's final test: its ``metrics.json`` (clean and PGD on the test split,
    written by ``advlora train``) read with the run's ``config.yaml`` and ``manifest.json``; None when
    ``metrics_file`` is not a training run's (an evaluation's metrics.json, or no config beside it)."""
    folder = metrics_file.parent
    try:
        m = json.loads(metrics_file.read_text(encoding="utf-8"))
        cfg = load_yaml(folder / "config.yaml") if (folder / "config.yaml").is_file() else None
    except (OSError, ValueError, AdvloraError):
        return None
    if not isinstance(m, dict) or cfg is None or "train_attack" not in m or "clean" not in m:
        return None
    man = json.loads((folder / "manifest.json").read_text(encoding="utf-8")) \
        if (folder / "manifest.json").is_file() else {}
    task = "classification" if "top1" in m["clean"] else "retrieval"
    model, data, ev = cfg.get("model", {}), cfg.get("data", {}), cfg.get("eval", {})
    threat = None
    if m.get("robust"):
        norm = cfg.get("attack", {}).get("norm", "linf")
        eps = parse_eps(ev.get("eps") or cfg.get("attack", {}).get("eps"))
        threat = {"norm": norm, "eps": eps, "eps_str": format_eps(eps, norm), "steps": ev.get("test_steps")}
    eval_set = str(data.get("eval_name") or data.get("name"))
    attack = m.get("attack", "pgd")
    return {"schema": RESULTS_SCHEMA, "protocol": {"name": TRAINING_TEST}, "model": model.get("name") if not
            model.get("random") else f"random {model['random']}",
            "adapter": str(folder / "adapter") if (folder / "adapter").is_dir() else None,
            "method": m.get("method"), "objective": m.get("objective"), "train_attack": m.get("train_attack"),
            "trained_on": [str(data.get("name"))], "data": eval_set, "dataset": eval_set, "split": m.get("split"),
            "task": task, "n_images": m.get("n_images"), "n_texts": m.get("n_texts"), "threat": threat,
            "attacks": [attack] if threat else [], "budget": {}, "headline": HEADLINE[task], "clean": m["clean"],
            "robust": {"attack": f"{attack}@{threat['eps_str']}", "metrics": m["robust"]} if threat else None,
            "results": {}, "sanity": {"verdict": None, "checks": []}, "versions": man.get("versions", {}),
            "commit": man.get("git_commit"), "time": man.get("time")}


def iter_records(paths: list[str], notes: list[str] | None = None, *, training_runs: bool = True,
                 others: list[Path] | None = None) -> Iterator[tuple[Path, dict]]:
    """(path, record) of every valid results file under ``paths`` (folders searched recursively in name order,
    files named directly), one at a time, so that a caller that keeps only what it needs of each record holds
    one record in memory; one line per JSON file skipped is appended to ``notes``. JSON without a ``schema``
    key is not a results file and is passed over silently (manifest.json, an evaluation's metrics.json; each one's
    path appended to ``others``), except, with ``training_runs``, a training run's ``metrics.json``, read as the
    record of its final test (``training_run_record``: ``advlora results``); without it (the leaderboard, whose
    entries are evaluations) only files that declare the results schema are records."""
    notes = notes if notes is not None else []
    others = others if others is not None else []
    for p in map(Path, paths):
        if not p.exists():
            raise AdvloraError(f"{p}: no such file or folder")
        files = [p] if p.is_file() else sorted(p.rglob("*.json"))
        for f in files:
            try:
                rec = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                notes.append(f"{f}: not readable JSON ({type(e).__name__})")
                continue
            if training_runs and isinstance(rec, dict) and "schema" not in rec and f.name == "metrics.json":
                rec = training_run_record(f)
            if not isinstance(rec, dict) or "schema" not in rec:
                others.append(f)
                continue
            problems = check_record(rec)
            if problems:
                notes.append(f"{f}: skipped ({'; '.join(problems)})")
                continue
            yield f, rec


def find_records(paths: list[str]) -> tuple[list[tuple[Path, dict]], list[str]]:
    """Every (path, record) of ``iter_records(paths)`` in a list, and its notes."""
    notes: list[str] = []
    found = list(iter_records(paths, notes))
    return found, notes


__all__ = ["KINDS", "RESULTS_SCHEMA", "TRAINING_TEST", "Result", "Threat", "find_records", "iter_records",
           "training_run_record"]
