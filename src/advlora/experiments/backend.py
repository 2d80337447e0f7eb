"""The three calls an experiment makes into the pipeline: train a run, load its result, evaluate it robustly.

Everything experiment-specific (cells, summaries, reports) is elsewhere; this module only translates a cell
into ``advlora.training.train``, ``advlora.adapters.load_adapter`` and
``advlora.evaluation.sweep.evaluate_data`` calls and their results into plain dicts.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advlora.adapters import load_adapter, merge_adapter
from advlora.adapters import method as adapter_methods
from advlora.attacks import ThreatModel
from advlora.config import load_yaml, merge
from advlora.evaluation.sweep import Sweep, SweepSettings, evaluate_data, result_records
from advlora.experiments.spec import GridConfig, parse_eps
from advlora.runs import manifest
from advlora.runtime import resolve_device
from advlora.training import train
from advlora.training.config import DataConfig, ModelConfig, load_run_config
from advlora.training.setup import base_model as cached_copy
from advlora.training.setup import dataset as cached
from advlora.training.setup import param_counts

log = logging.getLogger(__name__)


def base_model(cfg_or_name: GridConfig | str, random: str | None = None):
    """A fresh copy of the experiment's untrained model (``random_model(arch, size)`` when ``random`` is set, else
    ``load_model``), from the trainer's per-process cache: a grid loads each base model once."""
    name = cfg_or_name.model if isinstance(cfg_or_name, GridConfig) else cfg_or_name
    random = cfg_or_name.random_model if isinstance(cfg_or_name, GridConfig) else random
    return cached_copy(ModelConfig(name=name, random=random), resolve_device())


def dataset(spec: str, split: str, limit: int | None, seed: int = 0):
    return cached(DataConfig(name=spec), split, limit, seed)


def train_run(cfg: GridConfig, method: str, run_dict: dict, out: Path,
              on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train (or resume) one run into ``out``; returns trainable/total parameters, training time, efficiency.
    ``on_step`` is the trainer's hook (called with the step number after every step).

    The trainer's own final test is cut to a token size (``FAST_TEST``): the eval cells evaluate every run on
    the same images under the grid's attacks, so a second, larger test inside each training would only cost time.
    """
    if not adapter_methods.get(method).trains:
        return {**param_counts(base_model(cfg)), "trainable": 0, "share": 0.0, "train_time_s": 0.0, "efficiency": {}}
    config = training_config(cfg, run_dict)
    resume = (out / "config.yaml").is_file()
    result = train(config, out, resume=resume, on_step=on_step)
    eff = dict(result.efficiency or _read_json(out / "efficiency.json"))
    total = result.total_params
    return {"trainable": result.trainable_params, "total": total,
            "share": 100.0 * result.trainable_params / max(1, total), "train_time_s": result.train_time_s,
            "steps": result.steps, "lr": config.lr(), "objective": config.train.objective, "efficiency": eff}


#: the trainer's per-epoch validation and final test, kept small (the eval cells do the real evaluation)
FAST_TEST = {"eval": {"val_limit": 32, "val_steps": 2, "test_limit": 32, "test_steps": 2},
             "train": {"progress": False, "tensorboard": False}}


def training_config(cfg: GridConfig, run_dict: dict):
    return load_run_config(base=merge(FAST_TEST, run_dict))


def load_trained(cfg: GridConfig, method: str, run: Path):
    """The model a train cell produced: the base model, with the run's adapter (or full weights) loaded."""
    model = base_model(cfg)
    if not adapter_methods.get(method).trains:
        return model
    load_adapter(model, run / "adapter")
    return model


def base_and_tuned(run: Path):
    """(base model, trained model) of a training run folder, for ``advlora analyze``."""
    conf = load_yaml(run / "config.yaml")
    name = conf.get("model", {}).get("name", "tiny-clip")
    method = conf.get("adapter", {}).get("method", "advlora")
    base = base_model(name, conf.get("model", {}).get("random"))
    tuned = base_model(name, conf.get("model", {}).get("random"))
    if not adapter_methods.get(method).trains:
        return base, None
    load_adapter(tuned, run / "adapter")
    merge_adapter(tuned)
    return base, tuned


def evaluate(cfg: GridConfig, model, data_spec: str, attacks: list[str], eps: str, *, sanity: bool = False,
             seed: int = 0, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluation sweep's cell of ``model`` under ``attacks`` at ``eps`` on the eval subset of ``data_spec``
    (``evaluate_robust``'s result); with ``provenance`` (``result_records``' method, objective, train_attack,
    trained_on) also its results records (``advlora.results/1``) under the key ``records``."""
    ev = cfg.eval
    data = dataset(data_spec, ev.split, ev.limit)
    threat = ThreatModel(norm=ev.norm, eps=eps, steps=ev.steps, seed=seed)
    settings = SweepSettings(attacks=list(attacks), rerank_k=ev.rerank_k, batch_size=ev.batch_size,
                             square_limit=ev.square_limit, square_queries=ev.square_queries, sanity=sanity,
                             sanity_limit=ev.sanity_limit, objective=ev.objective, exit_k=ev.exit_k)
    result = evaluate_data(model, data, [threat], settings, spec=data_spec, split=ev.split)
    res = result.runs[0]
    res.pop("protocol", None)  # the same paragraph for every cell: the report states it once
    if provenance is not None:
        res["records"] = result_records(Sweep(cfg.model if cfg.random_model is None else cfg.random_model, None,
                                              [result], settings), provenance, manifest(seed=seed))
    return res


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


__all__ = ["base_model", "base_and_tuned", "dataset", "evaluate", "load_trained", "parse_eps", "train_run"]
