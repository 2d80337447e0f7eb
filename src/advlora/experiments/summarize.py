"""Collect the cells of an experiment into ``summary.json``: per data set and method, mean and spread over seeds.

Every number comes from a cell's ``metrics.json`` / ``train.json``; nothing is computed here but means,
sample standard deviations and the experiment-level sanity check (PGD robust r_mean non-increasing over the
eps values of different cells; the per-evaluation checks come from ``evaluate_robust``).
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from advlora.attacks import registry
from advlora.attacks.registry import result_key
from advlora.evaluation.protocols import record as protocol_record
from advlora.evaluation.sanity import Check, check_monotone
from advlora.experiments import cells as C
from advlora.experiments.spec import (
    EvalSpec,
    GridConfig,
    eval_cells,
    evaluated_on,
    parse_eps,
    result_sets,
    train_cells,
)


def attack_name(attack: str, steps: int | None = None) -> str:
    """The table name of ``attack`` from its declaration (``PGD-10``, ``FGSM``); an unregistered name as is."""
    spec = registry.find(attack)
    return spec.table_name(steps) if spec is not None else attack


def agg(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), count and the values themselves (in the order given,
    e.g. per seed, for paired comparisons); nan values are left out of the statistics."""
    raw = [float("nan") if v is None else float(v) for v in values]
    vals = [v for v in raw if not math.isnan(v)]
    if not vals:
        return {"mean": float("nan"), "std": float("nan"), "n": 0, "values": raw}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals),
            "values": raw}


robust_key = result_key  # the one builder of "pgd@4/255" (``advlora.attacks.registry.result_key``)


def collect(cfg: GridConfig, root: Path) -> dict[str, Any]:
    """The summary of every complete cell under ``root`` (incomplete cells are listed as missing), per evaluated
    set (``result_sets``: the training sets, or those ``eval_on`` names) and method label."""
    results: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    rerank_k = None
    cell_seconds = 0.0
    for tc in train_cells(cfg):
        tfolder = root / "cells" / tc.key
        entries = {d: results.setdefault(d, {}).setdefault(tc.method.label, _empty_entry(tc))
                   for d in evaluated_on(cfg, tc.dataset)}
        if not C.is_complete(tfolder):
            missing.append(tc.key)
            continue
        info = C.train_info(tfolder)
        cell_seconds += float(info.get("wall_time_s") or 0.0)
        for entry in entries.values():
            entry["seeds"].append(tc.seed)
            entry["_train"].append(info)
        for ec in eval_cells(cfg, tc):
            entry = entries[ec.data]
            efolder = root / "cells" / ec.key
            if not C.is_complete(efolder):
                missing.append(ec.key)
                continue
            res = C.eval_result(efolder)
            cell_seconds += float(res.get("time_s") or 0.0)
            rerank_k = res.get("rerank_k", rerank_k)
            for name, a in res.get("attacks", {}).items():
                entry["_evals"].setdefault(robust_key(name, ec.eps), []).append(
                    {"seed": tc.seed, "attack": name, "eps": ec.eps, "threat": a.get("threat", ""),
                     "n_images": a.get("n_images"),
                     "clean": a["clean"], "robust": a["metrics"], "asr": a.get("asr", {}),
                     "time_s": a.get("seconds", 0.0)})
            if res.get("sanity"):
                checks = [Check.from_dict(c) for c in res["sanity"]]
                entry["sanity"].setdefault(ec.eps, []).extend(
                    c.prefixed(f"seed {tc.seed}: ") if len(cfg.seeds) > 1 else c for c in checks)
    for per_method in results.values():
        for label, entry in per_method.items():
            per_method[label] = _finish(entry, cfg)
    sets = result_sets(cfg)
    primary = results.get(sets[0], {})
    return {
        "name": cfg.name, "model": cfg.random_model or cfg.model, "datasets": sets, "seeds": cfg.seeds,
        "trained_on": {d: train for train in cfg.datasets for d in evaluated_on(cfg, train)},
        "spread": "sample standard deviation over seeds" if len(cfg.seeds) > 1 else "one seed: no spread",
        "budget": cfg.train, "eval": vars(cfg.eval),
        "methods": {label: _flat(e) for label, e in primary.items()},
        "results": results, "checks": experiment_checks(cfg, results), "missing_cells": missing,
        "rerank_k": rerank_k, "cells_seconds": cell_seconds, "protocol": cfg.protocol or protocol_record(None),
    }


def _empty_entry(tc) -> dict[str, Any]:
    return {"method": tc.method.method, "seeds": [], "sanity": {}, "_train": [], "_evals": {}}


def _finish(entry: dict[str, Any], cfg: GridConfig) -> dict[str, Any]:
    trains = entry.pop("_train")
    evals = entry.pop("_evals")
    if trains:
        entry["trainable"] = trains[0].get("trainable")
        entry["total"] = trains[0].get("total")
        entry["share"] = trains[0].get("share")
        entry["train_time_s"] = agg([t.get("train_time_s", 0.0) for t in trains])
        entry["lr"] = trains[0].get("lr")
        entry["objective"] = trains[0].get("objective")
        entry["efficiency"] = trains[0].get("efficiency", {})
    main = _main_key(cfg, evals)
    entry["clean"] = _agg_metrics([r["clean"] for r in evals.get(main, [])])
    entry["clean_seeds"] = [r["seed"] for r in evals.get(main, [])]   # the order of the clean values
    entry["clean_n_images"] = evals[main][0].get("n_images") if evals.get(main) else None
    entry["robust"] = {}
    for key, rs in evals.items():
        entry["robust"][key] = {
            "attack": rs[0]["attack"], "eps": rs[0]["eps"], "threat": rs[0].get("threat", ""),
            "n_images": rs[0].get("n_images"), "seeds": [r["seed"] for r in rs],
            "metrics": _agg_metrics([r["robust"] for r in rs]),
            "clean_same_images": _agg_metrics([r["clean"] for r in rs]),
            "asr": {d: agg([r.get("asr", {}).get(d) for r in rs]) for d in ("i2t", "t2i")},
            "eval_time_s": agg([r.get("time_s", 0.0) for r in rs]),
        }
    return entry


def _main_key(cfg: GridConfig, evals: dict) -> str | None:
    """The cell whose clean metrics stand for the method: at the first eps, an attack that is not black-box (a
    black-box attack runs on ``square_limit`` images, its clean metrics are theirs), else any."""
    for a in [*[a for a in cfg.eval.attacks if registry.get(a).kind != "black-box"], *cfg.eval.attacks]:
        key = robust_key(a, cfg.eval.eps[0])
        if key in evals:
            return key
    return next(iter(evals), None)


def _agg_metrics(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = list(rows[0]) if rows else []
    return {k: agg([r.get(k) for r in rows]) for k in keys if isinstance(rows[0].get(k), (int, float))}


def _flat(entry: dict[str, Any]) -> dict[str, Any]:
    """One method's means, as a reader of summary.json wants them: clean and robust metrics per attack."""
    mean = lambda m: {k: v["mean"] for k, v in m.items()}  # noqa: E731
    return {
        "method": entry["method"], "trainable": entry.get("trainable"), "total": entry.get("total"),
        "share": entry.get("share"), "train_time_s": entry.get("train_time_s", {}).get("mean"), "lr": entry.get("lr"),
        "objective": entry.get("objective"), "clean": mean(entry.get("clean", {})),
        "robust": {k: {"threat": r["threat"], "n_images": r["n_images"], **mean(r["metrics"]),
                       "clean_r_mean_same_images": r["clean_same_images"].get("r_mean", {}).get("mean"),
                       "asr_i2t": r["asr"]["i2t"]["mean"], "asr_t2i": r["asr"]["t2i"]["mean"]}
                   for k, r in entry.get("robust", {}).items()},
    }


def sweep_attack(ev: dict[str, Any]) -> str:
    """The attack of the robust-vs-eps sweep of a summary's ``eval`` settings (``EvalSpec.sweep_attack``; its
    default for a summary written before the field)."""
    return ev.get("sweep_attack") or EvalSpec.sweep_attack


def eps_sweep(entry: dict[str, Any], attack: str) -> list[tuple[float, float, float]]:
    """(eps, robust r_mean, spread) of ``attack`` (the sweep's, ``sweep_attack``) at every eps evaluated, with
    (0, clean, spread) first."""
    pts = []
    if "r_mean" in entry.get("clean", {}):
        c = entry["clean"]["r_mean"]
        pts.append((0.0, c["mean"], c["std"]))
    for r in entry.get("robust", {}).values():
        if r["attack"] == attack and "r_mean" in r["metrics"]:
            m = r["metrics"]["r_mean"]
            pts.append((parse_eps(r["eps"]), m["mean"], m["std"]))
    return sorted(pts)


def experiment_checks(cfg: GridConfig, results: dict[str, dict[str, Any]]) -> list[Check]:
    """Across cells: the sweep attack's robust r_mean non-increasing over eps (clean as eps 0), per data set and
    method."""
    lines = []
    attack = cfg.eval.sweep_attack
    for ds, per_method in results.items():
        prefix = f"{ds} / " if len(results) > 1 else ""
        for label, e in per_method.items():
            pts = eps_sweep(e, attack)
            if len(pts) > 2:
                lines.append(check_monotone([(eps, r) for eps, r, _ in pts],
                                            f"{prefix}{label} {registry.get(attack).label} (eps 0 = clean)"))
    return lines


# -- typed accessors of a summary (``collect``'s result, or summary.json read back) --------------------------------

def primary_results(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method label, the entry of the first data set."""
    return summary["results"].get(summary["datasets"][0], {})


def first_robust_key(summary: dict[str, Any]) -> str | None:
    """The first robust key (``pgd@4/255``) of the first method of the first data set."""
    entries = primary_results(summary)
    return next(iter(next(iter(entries.values()), {}).get("robust", {})), None)


def robust_stat(entry: dict[str, Any], key: str, metric: str = "r_mean") -> dict[str, Any]:
    """``agg`` statistics of ``metric`` under robust ``key`` of one method entry ({} when missing)."""
    return entry.get("robust", {}).get(key, {}).get("metrics", {}).get(metric, {})


def robust_seeds(entry: dict[str, Any], key: str) -> list[int]:
    """The seeds, in the order of ``robust_stat``'s values."""
    return entry.get("robust", {}).get(key, {}).get("seeds", [])


def clean_stat(entry: dict[str, Any], metric: str = "r_mean") -> dict[str, Any]:
    return entry.get("clean", {}).get(metric, {})


def first_threat(summary: dict[str, Any]) -> str:
    """The threat-model line of the first robust column of the first method."""
    return next(iter(next(iter(summary["methods"].values()), {}).get("robust", {}).values()), {}).get("threat", "")
