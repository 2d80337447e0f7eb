"""``clip-benchmark``: CLIP_benchmark's result JSON, with the keys RobustVLM's fork adds for attacks.

CLIP_benchmark (LAION-AI, ``clip_benchmark/cli.py``) writes ``{dataset, model, pretrained, task, metrics,
language}`` per evaluation, metrics as fractions: ``acc1``, ``acc5`` (classification), and
``image_retrieval_recall@k`` (text queries retrieving images: advlora's ``t2i_r{k}``) and
``text_retrieval_recall@k`` (image queries retrieving captions: ``i2t_r{k}``). RobustVLM's fork (chs20/RobustVLM)
adds ``attack`` (``none`` for the clean run), ``eps`` (in /255), ``norm`` (``Linf``), ``iterations_adv`` and
``beta``, and reports the robust numbers in the same metric keys under attack. A result gives two documents:
the clean one (``attack: none``) and the worst attack's; ``n_samples`` and ``headline`` are advlora's own keys.
"""
from __future__ import annotations

import re
from typing import Any

from advlora.errors import AdvloraError
from advlora.experiments.exports import Format, measured_only, register, require
from advlora.experiments.results import Result, Threat

TASKS = {"retrieval": "zeroshot_retrieval", "classification": "zeroshot_classification"}
NORMS = {"linf": "Linf", "l2": "L2"}
_DIRECTIONS = {"i2t": "text_retrieval_recall", "t2i": "image_retrieval_recall"}
_CLASSIFICATION = {"top1": "acc1", "top5": "acc5"}
KEYS = ("dataset", "model", "pretrained", "task", "metrics", "language", "attack", "eps", "norm", "iterations_adv")


def metric_name(key: str, task: str) -> str | None:
    """CLIP_benchmark's name of advlora's metric ``key`` (None: the format has none, e.g. ``r_mean``)."""
    if task == "classification":
        return _CLASSIFICATION.get(key)
    m = re.fullmatch(r"(i2t|t2i)_r(\d+)", key)
    return None if m is None else f"{_DIRECTIONS[m.group(1)]}@{m.group(2)}"


def metric_key(name: str, task: str) -> str | None:
    """advlora's key of CLIP_benchmark's metric ``name`` (the inverse of ``metric_name``)."""
    if task == "classification":
        return next((k for k, v in _CLASSIFICATION.items() if v == name), None)
    m = re.fullmatch(r"(text|image)_retrieval_recall@(\d+)", name)
    if m is None:
        return None
    return f"{'i2t' if m.group(1) == 'text' else 't2i'}_r{m.group(2)}"


def _metrics(values: dict[str, float], task: str) -> dict[str, float | None]:
    out = {}
    for k, v in values.items():
        name = metric_name(k, task)
        if name is not None:
            out[name] = None if v is None else float(v) / 100
    return out


def _unmetrics(values: dict[str, Any], task: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, v in values.items():
        key = metric_key(name, task)
        if key is not None:
            out[key] = None if v is None else float(v) * 100
    if task == "retrieval" and out and all(v is not None for v in out.values()):
        out["r_mean"] = sum(out.values()) / len(out)   # the mean of the recalls, as advlora defines it
    return out


def export(result: Result) -> list[dict[str, Any]]:
    th = result.threat
    common = {"dataset": result.dataset, "model": result.model, "pretrained": result.adapter or "",
              "task": TASKS[result.task], "language": "en", "beta": None,
              "eps": None if th is None else th.eps * 255, "norm": None if th is None else NORMS[th.norm],
              "iterations_adv": None if th is None else th.steps, "n_samples": result.n_images,
              "headline": result.headline}
    docs = [{**common, "metrics": _metrics(result.clean, result.task), "attack": "none"}]
    if result.robust is not None:
        docs.append({**common, "metrics": _metrics(result.robust, result.task), "attack": result.attack})
    return docs


def parse(docs: list[dict[str, Any]]) -> Result:
    for d in docs:
        require(d, KEYS, "a CLIP_benchmark result")
    clean = [d for d in docs if d["attack"] in ("none", None)]
    attacked = [d for d in docs if d["attack"] not in ("none", None)]
    if len(clean) != 1 or len(attacked) > 1:
        raise AdvloraError(f"a result is one clean CLIP_benchmark document and at most one under attack "
                           f"(got {len(clean)} clean, {len(attacked)} attacked)")
    c = clean[0]
    task = next((k for k, v in TASKS.items() if v == c["task"]), None)
    if task is None:
        raise AdvloraError(f"CLIP_benchmark task {c['task']!r} is not one of {', '.join(TASKS.values())}")
    norm = next((k for k, v in NORMS.items() if v == c["norm"]), None)
    threat = None if c["eps"] is None or norm is None else Threat.of(norm, float(c["eps"]) / 255, c["iterations_adv"])
    a = attacked[0] if attacked else None
    return Result(kind="measured", model=c["model"], task=task, data=c["dataset"], dataset=c["dataset"],
                  headline=c.get("headline") or ("top1" if task == "classification" else "r_mean"),
                  clean=_unmetrics(c["metrics"], task), robust=None if a is None else _unmetrics(a["metrics"], task),
                  threat=threat, attack=None if a is None else a["attack"], adapter=c["pretrained"] or None,
                  n_images=c.get("n_samples"))


def path(result: Result, doc: dict[str, Any]) -> str:
    """CLIP_benchmark's default output name, with RobustVLM's attack and eps: one file per document."""
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", str(x)).strip("_") or "none"
            for x in (doc["dataset"], doc["pretrained"], doc["model"], doc["language"], doc["task"],
                      str(doc["attack"]).split("@")[0], f"{doc['eps']:g}" if doc["eps"] is not None else "0")]
    return "{}_{}_{}_{}_{}_{}_eps{}.json".format(*safe)


FORMAT = register(Format("clip-benchmark", export, parse, measured_only, path,
                         doc="CLIP_benchmark's result JSON with RobustVLM's attack, eps, norm, iterations_adv"))
