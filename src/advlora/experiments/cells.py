"""Cells of an experiment: each a run folder, complete once its marker file is written (last, atomically).

A train cell trains one method on one data set with one seed (``advlora.training.train``, resumed when a
previous attempt was interrupted); an eval cell loads that result and evaluates it clean and under one
attack at one eps. A complete cell is never redone, so an interrupted grid continues where it stopped.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advlora.errors import AdvloraError
from advlora.evaluation.protocols import record as protocol_record
from advlora.evaluation.sweep import adapter_provenance, result_file_name
from advlora.experiments import backend
from advlora.experiments.spec import EvalCell, GridConfig, TrainCell, run_config_dict
from advlora.io import atomic_dir, write_json

log = logging.getLogger(__name__)

MARKER = "COMPLETE"


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def mark_complete(folder: Path, info: dict | None = None) -> None:
    """Write the marker last: a cell without it is redone (or resumed), one with it is skipped."""
    write_json(folder / MARKER, {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(info or {})})


def train_cell(cfg: GridConfig, cell: TrainCell, root: Path, fingerprint: str = "",
               on_step: Callable[[int], None] | None = None) -> Path:
    """Run (or resume, or skip when complete) the training of ``cell``; returns its folder (``on_step``: the
    trainer's per-step hook)."""
    folder = root / "cells" / cell.key
    if is_complete(folder):
        log.info("skip %s (complete)", cell.key)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    run_dict = run_config_dict(cfg, cell)
    log.info("train %s", cell.key)
    t0 = time.perf_counter()
    info = backend.train_run(cfg, cell.method.method, run_dict, folder / "run", on_step=on_step)
    info["wall_time_s"] = time.perf_counter() - t0
    info["fingerprint"] = fingerprint
    write_json(folder / "train.json", info)
    mark_complete(folder)
    return folder


def train_info(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "train.json").read_text())


def eval_cell(cfg: GridConfig, cell: EvalCell, root: Path, model_cache: dict, fingerprint: str = "") -> Path:
    """Evaluate the trained model of ``cell.train`` under ``cell.attacks`` at ``cell.eps`` (skip when complete)."""
    folder = root / "cells" / cell.key
    if is_complete(folder):
        have = eval_result(folder).get("fingerprint")
        if have and fingerprint and have != fingerprint:
            raise AdvloraError(f"{folder} was evaluated with different evaluation settings; use another --out "
                               "or delete that cell")
        return folder
    train_folder = root / "cells" / cell.train.key
    if cell.train.key not in model_cache:
        model_cache.clear()  # one trained model in memory at a time
        model_cache[cell.train.key] = backend.load_trained(cfg, cell.train.method.method, train_folder / "run")
    model = model_cache[cell.train.key]
    log.info("eval %s (%s)", cell.key, ", ".join(cell.attacks))
    t0 = time.perf_counter()
    method = cell.train.method
    trained = train_info(train_folder)
    adapter = train_folder / "run" / "adapter"
    prov = adapter_provenance(adapter if adapter.is_dir() else None)   # the training run's config says it
    result = backend.evaluate(cfg, model, cell.data, list(cell.attacks), cell.eps, sanity=cell.sanity,
                              seed=cell.train.seed, provenance=prov)
    result["time_s"] = time.perf_counter() - t0
    result["fingerprint"] = fingerprint
    result["protocol"] = cfg.protocol or protocol_record(None)
    records = result.pop("records")
    with atomic_dir(folder) as tmp:
        write_json(tmp / "metrics.json", result)
        for rec in records:     # the results files advlora results / leaderboard read, with the cell's run
            rec["run"] = {"label": method.label, "seed": cell.train.seed, "trainable": trained.get("trainable"),
                          "train_time_s": trained.get("train_time_s")}
            write_json(tmp / "results" / result_file_name(rec), rec)
        mark_complete(tmp)
    return folder


def eval_result(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "metrics.json").read_text())
