"""``csv``: one flat row per result, measured and reported alike (the ``kind`` column tells them apart).

Columns: ``kind, model, adapter, method, objective, task, data, dataset, n_images, norm, eps, eps_str, steps,
attack, headline, sanity, source, protocol``, then ``clean_<metric>`` and ``robust_<metric>`` for every metric
of any row (empty where a row has none, or where the value is null). Numbers are written with ``repr``
precision, so a round trip is exact.
"""
from __future__ import annotations

import csv
import io
from typing import Any

from advlora.errors import AdvloraError
from advlora.experiments.exports import Format, register
from advlora.experiments.results import Result, Threat

FIELDS = ("kind", "model", "adapter", "method", "objective", "task", "data", "dataset", "n_images", "norm", "eps",
          "eps_str", "steps", "attack", "headline", "sanity", "source", "protocol")


def export(result: Result) -> list[dict[str, Any]]:
    th = result.threat
    row: dict[str, Any] = {"kind": result.kind, "model": result.model, "adapter": result.adapter,
                           "method": result.method, "objective": result.objective, "task": result.task,
                           "data": result.data, "dataset": result.dataset, "n_images": result.n_images,
                           "norm": None if th is None else th.norm, "eps": None if th is None else repr(th.eps),
                           "eps_str": None if th is None else th.eps_str, "steps": None if th is None else th.steps,
                           "attack": result.attack, "headline": result.headline, "sanity": result.sanity,
                           "source": result.source, "protocol": result.protocol}
    row.update({f"clean_{k}": None if v is None else repr(float(v)) for k, v in result.clean.items()})
    row.update({f"robust_{k}": None if v is None else repr(float(v)) for k, v in (result.robust or {}).items()})
    return [{k: "" if v is None else str(v) for k, v in row.items()}]


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The fixed columns, then every metric column of ``rows`` (clean first), in first-seen order."""
    extra = dict.fromkeys(k for r in rows for k in r if k not in FIELDS)
    metrics = [k for k in extra if k.startswith("clean_")] + [k for k in extra if not k.startswith("clean_")]
    return [*FIELDS, *metrics]


def render(rows: list[dict[str, Any]]) -> str:
    """The rows as one CSV table with a header (``columns``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _opt(value: str) -> str | None:
    return value if value != "" else None


def _int(value: str) -> int | None:
    return None if value == "" else int(value)


def parse(docs: list[dict[str, Any]]) -> Result:
    if len(docs) != 1:
        raise AdvloraError(f"a csv result is one row, not {len(docs)}")
    d = {k: "" if v is None else str(v) for k, v in docs[0].items()}
    missing = [k for k in FIELDS if k not in d]
    if missing:
        raise AdvloraError(f"a results csv row: missing {', '.join(missing)}")

    def metrics(prefix: str) -> dict[str, float]:
        """The row's metrics of one kind; an empty cell is a metric the row lacks (or a null value)."""
        return {k[len(prefix):]: float(v) for k, v in d.items() if k.startswith(prefix) and v != ""}

    threat = None if not d["norm"] else Threat(norm=d["norm"], eps=float(d["eps"]), eps_str=d["eps_str"],
                                              steps=_int(d["steps"]))
    return Result(kind=d["kind"], model=d["model"], task=d["task"], data=d["data"], dataset=d["dataset"],
                  headline=d["headline"], clean=metrics("clean_"), robust=metrics("robust_") or None, threat=threat,
                  attack=_opt(d["attack"]), adapter=_opt(d["adapter"]), method=_opt(d["method"]),
                  objective=_opt(d["objective"]), n_images=_int(d["n_images"]), sanity=_opt(d["sanity"]),
                  source=_opt(d["source"]), protocol=_opt(d["protocol"]))


def path(result: Result, doc: dict[str, Any]) -> str:
    return "results.csv"


FORMAT = register(Format("csv", export, parse, lambda result: "", path,
                         doc="one flat row per result, measured and reported (the kind column)", render=render))
