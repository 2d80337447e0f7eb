"""Reported entries: published numbers read from a YAML file, as ``Result`` entries of kind ``"reported"``.

The file (schema ``advlora.reported/1``; the project ships ``reported.yaml`` beside this module with the
published anchors its research notes cite) holds groups of rows sharing one source, citation, protocol, task,
data set, metric, norm and attack; each row is a model with its clean number and its robust number per eps.
Every (row, eps) becomes one entry. Nothing here measures anything: the entries only stand beside measured
ones, in their own table (``advlora results --reported``) and in the csv export's ``kind`` column.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from advlora.config import load_yaml
from advlora.errors import AdvloraError
from advlora.evaluation.sweep import HEADLINE
from advlora.experiments.results import Result, Threat

SCHEMA = "advlora.reported/1"
#: the file of published anchors the package ships
SHIPPED = Path(__file__).with_name("reported.yaml")
GROUP_KEYS = ("source", "citation", "protocol", "task", "dataset", "metric", "norm", "attack", "rows")


def load_reported(path: str | Path | None = None) -> list[Result]:
    """The reported entries of ``path`` (default: the shipped file); a malformed file is one error line."""
    path = Path(path) if path is not None else SHIPPED
    data = load_yaml(path)
    if data.get("schema") != SCHEMA:
        raise AdvloraError(f"{path}: schema {data.get('schema')!r} is not {SCHEMA!r}")
    out = []
    for i, group in enumerate(data.get("groups") or []):
        out.extend(_entries(group, f"{path}: group {i + 1}"))
    return out


def _entries(group: dict[str, Any], where: str) -> list[Result]:
    if not isinstance(group, dict):
        raise AdvloraError(f"{where}: not a mapping")
    missing = [k for k in GROUP_KEYS if k not in group]
    if missing:
        raise AdvloraError(f"{where}: missing {', '.join(missing)}")
    task, metric = group["task"], group["metric"]
    if task not in HEADLINE:
        raise AdvloraError(f"{where}: task {task!r} is not one of {', '.join(HEADLINE)}")
    source = f"{group['source']}; {group['citation']}"
    out = []
    for j, row in enumerate(group["rows"] or []):
        if not isinstance(row, dict) or "model" not in row or "clean" not in row:
            raise AdvloraError(f"{where}, row {j + 1}: a model and its clean number")
        robust = row.get("robust") or {}
        cells = [(Threat.of(group["norm"], eps, group.get("steps")), value) for eps, value in robust.items()]
        for threat, value in cells or [(None, None)]:
            out.append(Result(kind="reported", model=str(row["model"]), task=task, data=str(group["dataset"]),
                              dataset=str(group["dataset"]), headline=metric, clean={metric: float(row["clean"])},
                              robust=None if threat is None else {metric: float(value)}, threat=threat,
                              attack=None if threat is None else f"{group['attack']}@{threat.eps_str}",
                              method=row.get("method"), objective=row.get("objective"), source=source,
                              protocol=" ".join(str(group["protocol"]).split())))
    return out


__all__ = ["SCHEMA", "SHIPPED", "load_reported"]
