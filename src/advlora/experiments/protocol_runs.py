"""The field's few-shot protocols as experiments: base-to-new, cross-dataset transfer and the shots x seeds sweep.

Each protocol is a ``GridConfig`` (``advlora.experiments.spec``) run by ``run_grid``: the same cells, resume,
fingerprints and report as ``advlora grid``, with the protocol's table computed from the summary afterwards.

- ``base-to-new`` (CoCoOp's): every method trains on k shots of the base classes of a class-folder set (the
  first ceil(n / 2) by sorted label, ``advlora.data.fewshot.base_new_split``) and is evaluated on the base and
  the new classes (``<set>:base``, ``<set>:new``), clean and under the attacks; H, the harmonic mean of the base
  and new accuracies (of their means over seeds, as CoOp reports it), per set, clean and robust.
- ``cross-dataset`` (CoOp's): train on one set, evaluate on a list of sets (classification and retrieval mixed,
  each with its own headline metric: top-1 accuracy or r_mean): the transfer table.
- ``few-shot``: a shots x seeds sweep (CoOp's 1, 2, 4, 8, 16 shots and seeds 1, 2, 3 by default); mean and
  sample standard deviation over seeds per (method, shots) cell.

The k-shot sample of a seed is drawn with that seed (``data.shot_seed``) and is the same for every method
(``advlora.data.fewshot``); ``finish`` checks that the trained cells' recorded samples agree and copies each
into ``<out>/fewshot/``. Every file the protocol writes names it: ``protocol.json``, ``summary.json`` and each
eval cell's ``metrics.json`` hold the record ``{"name", "settings", "overrides"}`` (``GridConfig.protocol``).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from advlora.adapters import method as adapter_methods
from advlora.data.fewshot import FEW_SHOT_FILE, PARTS, with_part
from advlora.errors import AdvloraError
from advlora.experiments.report import fmt
from advlora.experiments.spec import EvalSpec, GridConfig, MethodSpec, TrainCell, parse_eps, slug
from advlora.experiments.summarize import attack_name
from advlora.io import atomic_write_text, write_json
from advlora.metrics import harmonic_mean

#: the protocol commands (``advlora protocol KIND``)
KINDS = ("base-to-new", "cross-dataset", "few-shot")


@dataclass
class ProtocolSettings:
    """One protocol run: what trains (methods, model, budget, shots, seeds) and how it is evaluated.

    ``methods`` are ``(label, adapter method)`` pairs; a method that does not train (``frozen``) is evaluated as
    it is, once per seed. ``shots``: the k-shot sample sizes (base-to-new and cross-dataset use the first; an
    empty list trains cross-dataset on every training image). ``eval_eps`` defaults to the training eps.
    """

    kind: str
    data: str
    methods: list[tuple[str, str]]
    targets: list[str] = field(default_factory=list)
    shots: list[int] = field(default_factory=lambda: [16])
    seeds: list[int] = field(default_factory=lambda: [1])
    model: str = "tiny-clip"
    random_model: str | None = None
    objective: str | None = None
    steps: int = 60
    batch_size: int = 32
    lr: float | None = None
    train_eps: str = "2/255"
    train_steps: int = 3
    attacks: list[str] = field(default_factory=lambda: ["pgd"])
    eval_eps: list[str] = field(default_factory=list)
    eval_steps: int = 10
    limit: int | None = 200
    sanity: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AdvloraError(f"unknown protocol {self.kind!r} (valid: {', '.join(KINDS)})")
        if not self.methods:
            raise AdvloraError("--method: name at least one adapter method")
        if self.kind == "cross-dataset" and not self.targets:
            raise AdvloraError("cross-dataset: --targets names the sets to evaluate on")
        if self.kind != "cross-dataset" and self.targets:
            raise AdvloraError(f"{self.kind}: --targets belongs to cross-dataset")
        if self.kind in ("base-to-new", "few-shot") and not self.shots:
            raise AdvloraError(f"{self.kind}: --shots needs at least one value")
        if self.kind == "base-to-new" and len(self.shots) > 1:
            raise AdvloraError("base-to-new trains on one k-shot sample size: give one --shots value")
        bad = [k for k in self.shots if isinstance(k, bool) or not isinstance(k, int) or k < 1]
        if bad:
            raise AdvloraError(f"--shots must be integers >= 1, got {bad[0]!r}")
        if len(set(self.shots)) != len(self.shots):
            raise AdvloraError(f"--shots names a value twice: {self.shots}")
        for e in [self.train_eps, *self.eval_eps]:
            parse_eps(e)
        self.eval_eps = list(self.eval_eps) or [self.train_eps]

    def record(self) -> dict[str, Any]:
        """The protocol record every file of the run holds (``advlora.evaluation.protocols.record``'s shape)."""
        settings = {k: v for k, v in asdict(self).items() if k != "kind"}
        settings["methods"] = [{"label": lab, "method": m} for lab, m in self.methods]
        settings["split"] = "base: the first ceil(n/2) classes by sorted label" if self.kind == "base-to-new" else None
        return {"name": self.kind, "settings": {k: v for k, v in settings.items() if v is not None},
                "overrides": {}}


def grid_config(s: ProtocolSettings) -> GridConfig:
    """The experiment that runs protocol ``s``."""
    train: dict[str, Any] = {"train": {"steps": s.steps, "batch_size": s.batch_size},
                             "attack": {"eps": s.train_eps, "steps": s.train_steps}}
    if s.lr is not None:
        train["train"]["lr"] = s.lr
    if s.objective is not None:
        train["train"]["objective"] = s.objective
    methods: list[MethodSpec] = []
    for label, method in s.methods:
        trains = adapter_methods.get(method).trains
        if s.kind == "few-shot" and trains:
            methods += [MethodSpec(label=shot_label(label, k), method=method, config={"data": {"shots": k}})
                        for k in s.shots]
        else:
            methods.append(MethodSpec(label=label, method=method))
    if s.kind != "few-shot" and s.shots:
        train["data"] = {"shots": s.shots[0]}
    if s.kind == "base-to-new":
        datasets = [with_part(s.data, "base")]
        eval_on = {datasets[0]: [with_part(s.data, p) for p in PARTS]}
    elif s.kind == "cross-dataset":
        datasets, eval_on = [s.data], {s.data: list(dict.fromkeys(s.targets))}
    else:
        datasets, eval_on = [s.data], {}
    return GridConfig(name=s.kind, model=s.model, random_model=s.random_model, datasets=datasets, seeds=s.seeds,
                      train=train, methods=methods, eval_on=eval_on, protocol=s.record(),
                      eval=EvalSpec(attacks=s.attacks, eps=s.eval_eps, steps=s.eval_steps, limit=s.limit, sweep_eps=[],
                                    sanity=s.sanity, square_limit=min(s.limit or 64, 64)))


def shot_label(label: str, shots: int) -> str:
    return f"{label} {shots}-shot"


def headline(entry: dict[str, Any]) -> str:
    """The metric a set's table leads with: top-1 accuracy on a classification set, r_mean on a retrieval set."""
    return "top1" if "top1" in entry.get("clean", {}) else "r_mean"


def _stat(entry: dict[str, Any], key: str | None, metric: str) -> dict[str, Any]:
    if key is None:
        return entry.get("clean", {}).get(metric, {})
    return entry.get("robust", {}).get(key, {}).get("metrics", {}).get(metric, {})


def robust_columns(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(robust key, header) per attack and eps: ``pgd@2/255`` -> ``PGD-10 2/255``."""
    ev = summary["eval"]
    return [(f"{a}@{e}", f"{attack_name(a, ev['steps'])} {e}") for e in ev["eps"] for a in ev["attacks"]]


def _h(base: dict, new: dict) -> str:
    if not base or not new or not base.get("n") or not new.get("n"):
        return "-"
    h = harmonic_mean(base["mean"], new["mean"])
    return "-" if math.isnan(h) else f"{h:.1f}"


def base_to_new_table(s: ProtocolSettings, summary: dict[str, Any]) -> dict[str, Any]:
    """Per method: base, new and H, clean and under each attack (top-1 %, mean ± spread over seeds)."""
    base, new = (summary["results"].get(with_part(s.data, p), {}) for p in PARTS)
    cols = [(None, "clean"), *robust_columns(summary)]
    columns = ["method"] + [f"{head} {part}" for _, head in cols for part in ("base", "new", "H")]
    rows = []
    for label, _ in s.methods:
        b, n = base.get(label, {}), new.get(label, {})
        row = [label]
        for key, _ in cols:
            sb, sn = _stat(b, key, "top1"), _stat(n, key, "top1")
            row += [fmt(sb, len(s.seeds)), fmt(sn, len(s.seeds)), _h(sb, sn)]
        rows.append(row)
    return {"id": "base-to-new", "columns": columns, "rows": rows,
            "caption": f"top-1 accuracy (%) on {s.data} (test split), base = the first half of the classes by sorted "
                       f"label, new = the rest; trained on {s.shots[0]} shots of the base classes; H = harmonic "
                       f"mean of the base and new means; {_seeds_text(s)}"}


def cross_dataset_table(s: ProtocolSettings, summary: dict[str, Any]) -> dict[str, Any]:
    """Per method: each target's headline metric, clean and under each attack."""
    cols = [(None, "clean"), *robust_columns(summary)]
    targets = list(dict.fromkeys(s.targets))
    columns = ["method"] + [f"{t} {head}" for t in targets for _, head in cols]
    rows = []
    for label, _ in s.methods:
        row = [label]
        for t in targets:
            entry = summary["results"].get(t, {}).get(label, {})
            row += [fmt(_stat(entry, key, headline(entry)), len(s.seeds)) for key, _ in cols]
        rows.append(row)
    metrics = ", ".join(f"{t}: {headline(next(iter(summary['results'].get(t, {}).values()), {}))}" for t in targets)
    shots = f"{s.shots[0]} shots per class" if s.shots else "every training image"
    return {"id": "cross-dataset", "columns": columns, "rows": rows,
            "caption": f"trained on {s.data} ({shots}), evaluated on each set's test split (%: {metrics}); "
                       f"{_seeds_text(s)}"}


def few_shot_table(s: ProtocolSettings, summary: dict[str, Any]) -> dict[str, Any]:
    """Per method and shots: clean and robust top-1, mean ± spread over the seeds."""
    res = summary["results"].get(s.data, {})
    cols = [(None, "clean"), *robust_columns(summary)]
    columns = ["method", "shots"] + [head for _, head in cols]
    rows = []
    for label, method in s.methods:
        if adapter_methods.get(method).trains:
            cells = [(str(k), res.get(shot_label(label, k), {})) for k in s.shots]
        else:
            cells = [("0 (zero-shot)", res.get(label, {}))]
        for shots, entry in cells:
            rows.append([label, shots, *[fmt(_stat(entry, key, headline(entry)), len(s.seeds)) for key, _ in cols]])
    return {"id": "few-shot", "columns": columns, "rows": rows,
            "caption": f"{'top-1 accuracy' if res and headline(next(iter(res.values()))) == 'top1' else 'r_mean'} "
                       f"(%) on {s.data} (test split) after training on k shots per class; {_seeds_text(s)}"}


TABLES = {"base-to-new": base_to_new_table, "cross-dataset": cross_dataset_table, "few-shot": few_shot_table}


def _seeds_text(s: ProtocolSettings) -> str:
    seeds = ", ".join(map(str, s.seeds))
    return (f"seeds {seeds} (mean ± sample standard deviation; each seed draws its own k-shot sample)"
            if len(s.seeds) > 1 else f"seed {seeds}, one k-shot sample: no spread")


def shot_samples(cfg: GridConfig, root: Path) -> dict[str, Any]:
    """The k-shot sample of every (shots, seed) the trained cells drew, checked to be the same for every
    method, each copied to ``root/fewshot/<k>-shot-seed<s>.json``; returns, per sample, its size, a hash of
    its image list and the methods that trained on it. Differing samples are an error."""
    found: dict[str, tuple[dict, list[str]]] = {}
    for ds in cfg.datasets:
        for m in cfg.methods:
            for seed in cfg.seeds:
                path = root / "cells" / TrainCell(m, ds, seed).key / "run" / FEW_SHOT_FILE
                if not path.is_file():
                    continue
                rec = json.loads(path.read_text())
                name = f"{slug(ds)}-{rec['shots']}-shot-seed{rec['seed']}"
                have = found.setdefault(name, (rec, []))
                if (have[0]["images"], have[0]["labels"]) != (rec["images"], rec["labels"]):
                    raise AdvloraError(f"{path}: the {rec['shots']}-shot sample of seed {rec['seed']} differs from "
                                       f"that of {have[1][0]}; the methods did not train on the same images")
                have[1].append(m.label)
    out = {}
    for name, (rec, labels) in found.items():
        write_json(root / "fewshot" / f"{name}.json", rec)
        digest = hashlib.sha256(json.dumps([rec["images"], rec["labels"]]).encode()).hexdigest()[:16]
        out[name] = {"shots": rec["shots"], "seed": rec["seed"], "dataset": rec["dataset"],
                     "images": len(rec["images"]), "classes": rec["classes"], "sha256": digest, "methods": labels,
                     "file": f"fewshot/{name}.json"}
    return out


def finish(s: ProtocolSettings, cfg: GridConfig, root: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Write ``protocol.json`` (the record, the table, the k-shot samples, provenance) and ``table.md``;
    returns the protocol result."""
    table = TABLES[s.kind](s, summary)
    man = summary.get("manifest", {})
    result = {"protocol": s.record(), "tables": [table], "samples": shot_samples(cfg, root),
              "threat_models": sorted({r.get("threat", "") for per in summary["results"].values()
                                       for e in per.values() for r in e.get("robust", {}).values()} - {""}),
              "command": man.get("command", ""), "commit": man.get("git_commit") or man.get("commit", ""),
              "machine": man.get("platform", ""), "wall_s": summary.get("elapsed_s", 0.0),
              "cells_seconds": summary.get("cells_seconds", 0.0), "missing_cells": summary.get("missing_cells", [])}
    write_json(root / "protocol.json", result)
    atomic_write_text(root / "table.md", "\n".join([f"# {s.kind}: {s.data}", "", f"{table['caption']}.", "",
                                                    *markdown(table), ""]))
    return result


def markdown(table: dict[str, Any]) -> list[str]:
    cols, rows = table["columns"], table["rows"]
    return ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|",
            *["| " + " | ".join(map(str, r)) + " |" for r in rows]]


def text_table(table: dict[str, Any]) -> str:
    """The table as the terminal shows it: aligned columns."""
    cols, rows = table["columns"], table["rows"]
    widths = [max(len(str(x)) for x in [c, *[r[i] for r in rows]]) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *[line(r) for r in rows]])


__all__ = ["KINDS", "ProtocolSettings", "TABLES", "finish", "grid_config", "headline", "shot_label", "shot_samples",
           "text_table"]
