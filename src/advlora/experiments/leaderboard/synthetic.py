"""Synthetic results records: what the leaderboard's tests and its scale benchmark build a site from.

Each record is valid under ``check_record`` and written as ``advlora eval`` writes one (a results file under a
run folder with a ``manifest.json``), with numbers drawn from a seeded generator: nothing here is a measurement.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from advlora.adapters.method import choices, get
from advlora.attacks.threat import format_eps
from advlora.evaluation.sweep import RESULTS_SCHEMA, check_record
from advlora.io import write_json

RETRIEVAL = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
OBJECTIVES = ("tecoa", "fare", "pmg")


def synthetic_record(*, task: str = "retrieval", dataset: str = "emoji-downstream", model: str = "tiny-clip",
                     method: str = "lora", label: str | None = None, objective: str | None = "tecoa",
                     seed: int = 0, clean: float = 50.0, robust: float | None = 20.0, eps: float | None = 4 / 255,
                     attacks: dict[str, float] | None = None, flagged: bool = False, trainable: int | None = None,
                     protocol: str = "advlora-default") -> dict[str, Any]:
    """One valid results record whose headline metric is ``clean`` and, under ``eps`` (None: clean only),
    ``robust`` (the worst of ``attacks``, name -> headline; default one ``pgd`` at ``robust``). ``flagged``: one
    sanity check failed. ``label``, ``seed`` and ``trainable`` go into the record's ``run`` block."""
    headline = "r_mean" if task == "retrieval" else "top1"
    names = RETRIEVAL if task == "retrieval" else ("top1", "top5")
    attacks = attacks if attacks is not None else ({"pgd": robust} if eps is not None else {})
    eps_str = None if eps is None else format_eps(eps)

    def metrics(value: float) -> dict[str, float]:
        return {**{k: value for k in names}, headline: value}

    results = {f"{a}@{eps_str}": {"attack": a, "threat": f"linf {eps_str}", "metrics": metrics(v),
                                  "clean": metrics(clean), "asr": {}, "n_images": 64} for a, v in attacks.items()}
    worst = min(attacks, key=attacks.get) if attacks else None
    checks = [{"status": "FAIL" if flagged else "PASS",
               "message": "robust above clean under pgd" if flagged else "robust <= clean under pgd", "hint": ""}]
    rec = {"schema": RESULTS_SCHEMA, "protocol": {"name": protocol}, "model": model,
           "adapter": f"runs/{label or method}/seed{seed}/adapter" if get(method).trains else None, "method": method,
           "objective": objective, "train_attack": "pgd", "trained_on": [dataset], "data": dataset,
           "dataset": f"{dataset}-test", "split": "test", "task": task, "n_images": 64, "n_texts": 64,
           "threat": None if eps is None else {"norm": "linf", "eps": eps, "eps_str": eps_str, "steps": 10,
                                               "step_size": eps / 4, "restarts": 1, "random_start": True,
                                               "seed": seed},
           "attacks": list(attacks), "budget": {}, "headline": headline, "clean": metrics(clean),
           "robust": None if worst is None else {"attack": f"{worst}@{eps_str}", "metrics": metrics(attacks[worst])},
           "results": results, "sanity": {"verdict": None, "checks": checks if eps is not None else []},
           "versions": {}, "commit": "0" * 40, "time": "2026-01-01T00:00:00+00:00",
           "run": {"label": label or method, "seed": seed, "trainable": trainable}}
    problems = check_record(rec)
    assert not problems, problems
    return rec


def write_synthetic(folder: str | Path, n: int, *, seeds: int = 1, seed: int = 0, flagged_every: int = 0) -> int:
    """Write ``n`` synthetic results files under ``folder`` (one run folder with its manifest.json): one table,
    ``n // seeds`` rows (each a method label x backbone) of ``seeds`` seeds each; every ``flagged_every``-th row
    flagged (0: none). Returns the number of files written."""
    folder = Path(folder)
    rng = random.Random(seed)
    methods = choices()
    write_json(folder / "manifest.json", {"command": f"synthetic {n}", "platform": "synthetic"})
    for i in range(n):
        row, s = divmod(i, seeds)
        r = random.Random(row)
        clean = r.uniform(20, 90)
        robust = clean * r.uniform(0.05, 0.8) + rng.gauss(0, 0.5)
        rec = synthetic_record(method=methods[row % len(methods)], label=f"m{row}", objective=OBJECTIVES[row % 3],
                               model=("tiny-clip", "tiny-siglip")[row % 2], seed=s, clean=clean + rng.gauss(0, 0.5),
                               robust=robust, attacks={"pgd": robust, "square": robust + r.uniform(0, 5)},
                               flagged=bool(flagged_every) and row % flagged_every == 0,
                               trainable=int(10 ** r.uniform(3, 7)))
        write_json(folder / "results" / f"{i:06d}.json", rec)
    return n


__all__ = ["synthetic_record", "write_synthetic"]
