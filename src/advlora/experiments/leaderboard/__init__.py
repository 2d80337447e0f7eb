"""The leaderboard: results files, published numbers and every method's cost, as tables to compare.

``collect`` reads results files (``advlora.results/1``) one at a time (``iter_records``) and keeps of each only
the figures a table shows, so memory grows with the table, not with the files read. It groups them into one
table per task x data set x threat model x protocol; within a table one row per backbone x method (the grid's
label where a record carries one) x objective x training attack: records that differ only in their seed (and
adapter folder) are that row's seeds, shown as mean +- sample standard deviation. Each row carries the clean
and robust headline metric, the robust one per attack, the suite's number (an attack of kind ``suite``), the
sanity verdicts, the trainable parameters (the record's own ``run`` block where it has one, else the method's
figure of ``advlora bench --methods``), the training cost of that bench (step time against LoRA's, peak memory
against full fine-tuning's) and the provenance of every seed (file, command, commit, machine, protocol).

Rows whose sanity checks flagged anything (gradient masking) are marked and left out of the ranking and the
Pareto fronts. Reported entries (published numbers, ``advlora.experiments.reported``) go into tables of their
own, never into a measured one. ``advlora.experiments.leaderboard.site`` writes the tables as a static page.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlora.adapters import method as adapter_methods
from advlora.attacks import registry
from advlora.errors import AdvloraError
from advlora.evaluation.sanity import Check
from advlora.experiments.results import Result, iter_records

#: the file ``advlora bench --methods`` writes (its figures under the key ``methods``)
BENCH_FILE = "bench.json"
#: how far up from a results file a run folder's manifest.json is looked for
MANIFEST_DEPTH = 6


@dataclass(frozen=True)
class TableKey:
    """What one table holds: entries of one ``kind`` on one task, data set, threat model and protocol."""

    kind: str
    task: str
    dataset: str
    threat: str
    protocol: str
    metric: str

    def ident(self) -> str:
        """A stable, URL-safe id of the table (its anchor in the page)."""
        text = "-".join((self.kind, self.task, self.dataset, self.threat, self.protocol))
        return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


@dataclass
class Row:
    """One row of a table: one backbone x method x objective x training attack, over its seeds."""

    backbone: str
    method: str
    label: str
    objective: str
    train_attack: str
    family: str = ""
    seeds: list[Any] = field(default_factory=list)
    clean: list[float] = field(default_factory=list)
    robust: list[float] = field(default_factory=list)
    attacks: dict[str, list[float]] = field(default_factory=dict)
    suite: list[float] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    checked: int = 0
    trainable: int | None = None
    trainable_from: str = ""
    provenance: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""

    @property
    def flagged(self) -> bool:
        """Whether a seed's sanity checks flagged anything (a sign of gradient masking)."""
        return bool(self.flags)

    def verdict(self) -> str:
        if self.flags:
            return "FLAGGED: " + "; ".join(dict.fromkeys(self.flags))
        return f"no sign of gradient masking ({self.checked} of {len(self.seeds)} seeds checked)" if self.checked \
            else "not checked"


@dataclass
class Table:
    key: TableKey
    rows: dict[tuple, Row] = field(default_factory=dict)
    attacks: dict[str, None] = field(default_factory=dict)


@dataclass
class Board:
    """Every table, the bench figures read (method -> row of ``bench --methods``), notes on what was skipped, the
    results files read (``n_files``) and the other JSON files passed over (``n_skipped``: manifests, a training
    run's ``metrics.json``: no evaluation record)."""

    tables: dict[TableKey, Table] = field(default_factory=dict)
    bench: dict[str, dict[str, Any]] = field(default_factory=dict)
    bench_source: str = ""
    notes: list[str] = field(default_factory=list)
    n_files: int = 0
    n_skipped: int = 0

    def measured(self) -> list[Table]:
        return [t for k, t in sorted(self.tables.items(), key=lambda kv: _order(kv[0])) if k.kind == "measured"]

    def reported(self) -> list[Table]:
        return [t for k, t in sorted(self.tables.items(), key=lambda kv: _order(kv[0])) if k.kind == "reported"]


def _order(key: TableKey) -> tuple:
    return key.task, key.dataset, key.threat, key.protocol


# ---- statistics ---------------------------------------------------------------------------------------------
def mean_spread(values: list[float]) -> tuple[float, float] | None:
    """(mean, sample standard deviation; 0 with one value) of ``values``; None when there are none."""
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For each (x, y) of ``points``, whether it is on the front of maximising both: no other point is at least
    as large in both and larger in one (equal points are on it together)."""
    front = [False] * len(points)
    order = sorted(range(len(points)), key=lambda i: -points[i][0])
    best_right = float("-inf")          # the largest y among points of strictly larger x
    start = 0
    while start < len(order):
        end = start
        while end < len(order) and points[order[end]][0] == points[order[start]][0]:
            end += 1
        group = order[start:end]
        top = max(points[i][1] for i in group)
        for i in group:
            front[i] = points[i][1] == top and top > best_right
        best_right = max(best_right, top)
        start = end
    return front


def is_flagged(check: dict[str, Any] | str) -> bool:
    """Whether one sanity check of a results record did not pass."""
    return not Check.from_dict(check).passed


# ---- reading ------------------------------------------------------------------------------------------------
def family_of(method: str | None) -> str:
    """The method's declared family (``AdapterMethod.family``); the name itself for an undeclared method."""
    if not method:
        return "-"
    try:
        return adapter_methods.get(method).family or method
    except AdvloraError:
        return method


def _attack_kind(name: str) -> str | None:
    spec = registry.find(name)
    return None if spec is None else spec.kind


class Manifests:
    """The manifest.json of the run folder above a results file, looked up once per folder."""

    def __init__(self) -> None:
        self._by_dir: dict[Path, dict[str, Any]] = {}

    def of(self, path: Path) -> dict[str, Any]:
        chain, found = [], {}
        folder = path.parent
        for _ in range(MANIFEST_DEPTH):
            if folder in self._by_dir:
                found = self._by_dir[folder]
                break
            chain.append(folder)
            m = folder / "manifest.json"
            if m.is_file():
                try:
                    found = json.loads(m.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    found = {}
                found = {"command": found.get("command"), "platform": found.get("platform"),
                         "device": (found.get("execution") or {}).get("device")} if isinstance(found, dict) else {}
                break
            if folder.parent == folder:
                break
            folder = folder.parent
        for f in chain:
            self._by_dir[f] = found
        return found


def record_row_key(rec: dict[str, Any]) -> tuple:
    run = rec.get("run") or {}
    return (rec["model"] or "-", rec["method"] or "-", str(run.get("label") or rec["method"] or "-"),
            rec["objective"] or "-", rec["train_attack"] or "-")


def add_record(board: Board, path: Path, rec: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Add one results record to its table and row (only the figures the page shows are kept)."""
    th = rec["threat"]
    metric = rec["headline"]
    protocol = (rec.get("protocol") or {}).get("name") or "-"
    key = TableKey("measured", rec["task"], rec["dataset"] or str(rec["data"]),
                   "clean only" if th is None else f"{th['norm']} {th['eps_str']}", protocol, metric)
    table = board.tables.setdefault(key, Table(key))
    rk = record_row_key(rec)
    row = table.rows.get(rk)
    if row is None:
        row = table.rows[rk] = Row(*rk, family=family_of(rec["method"]))
    run = rec.get("run") or {}
    row.seeds.append(run.get("seed", (th or {}).get("seed")))
    row.clean.append(float(rec["clean"][metric]))
    if rec["robust"] is not None:
        row.robust.append(float(rec["robust"]["metrics"][metric]))
    for name, entry in (rec.get("results") or {}).items():
        value = (entry.get("metrics") or {}).get(metric)
        if value is None or entry.get("subset"):
            continue
        attack = name.split("@")[0]
        if _attack_kind(attack) == "suite":
            row.suite.append(float(value))
            continue
        table.attacks[attack] = None
        row.attacks.setdefault(attack, []).append(float(value))
    sanity = rec.get("sanity") or {}
    checks = sanity.get("checks") or []
    if checks or sanity.get("verdict"):
        row.checked += 1
    bad = [Check.from_dict(c).message for c in checks if is_flagged(c)]
    if not checks and sanity.get("verdict") and not str(sanity["verdict"]).startswith("no sign"):
        bad.append(str(sanity["verdict"]))
    row.flags.extend(bad)
    if run.get("trainable") is not None:
        row.trainable, row.trainable_from = int(run["trainable"]), "run"
    row.provenance.append({"file": str(path), "seed": row.seeds[-1], "command": manifest.get("command"),
                           "commit": rec.get("commit"), "time": rec.get("time"),
                           "machine": " ".join(str(v) for v in (manifest.get("platform"), manifest.get("device"))
                                               if v) or None,
                           "protocol": protocol, "n_images": rec.get("n_images")})


def add_reported(board: Board, entry: Result) -> None:
    """A published number into a table of reported entries (its own kind: never a measured table)."""
    key = TableKey("reported", entry.task, entry.dataset, "clean only" if entry.threat is None
                   else entry.threat.label(), entry.protocol or "-", entry.headline)
    table = board.tables.setdefault(key, Table(key))
    rk = (entry.model, entry.method or "-", entry.model, entry.objective or "-", entry.attack_name or "-")
    row = table.rows.setdefault(rk, Row(*rk, family=family_of(entry.method), source=entry.source or ""))
    row.seeds.append(None)
    row.clean.append(float(entry.clean[entry.headline]))
    if entry.robust is not None:
        row.robust.append(float(entry.robust[entry.headline]))
    row.provenance.append({"source": entry.source, "protocol": entry.protocol, "attack": entry.attack})


def read_bench(board: Board, path: Path) -> bool:
    """The per-method figures of a ``bench.json`` that ``advlora bench --methods`` wrote (False: another
    bench's file). The newest file read (by its figures' order of reading) wins."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        board.notes.append(f"{path}: not readable JSON")
        return False
    methods = data.get("methods") if isinstance(data, dict) else None
    if not isinstance(methods, dict) or not isinstance(methods.get("rows"), list):
        return False
    if board.bench:
        board.notes.append(f"{path}: replaces the method costs of {board.bench_source}")
    size = (methods.get("config") or {}).get("size")
    board.bench = {r["method"]: {**r, "size": size} for r in methods["rows"] if isinstance(r, dict) and "method" in r}
    board.bench_source = str(path)
    return True


def collect(paths: list[str], reported: list[Result] | None = None) -> Board:
    """The board of every results file and ``bench --methods`` file under ``paths``, and the ``reported``
    entries; an empty board is one error line."""
    board = Board()
    manifests = Manifests()
    benches: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise AdvloraError(f"{p}: no such file or folder")
        bench_files = [p] if p.is_file() and p.name == BENCH_FILE else sorted(p.rglob(BENCH_FILE)) if p.is_dir() \
            else []
        for f in bench_files:
            if read_bench(board, f):
                benches.add(f)
    others: list[Path] = []
    # the entries are evaluations: a training run's final test (its metrics.json, no results schema) is not one
    for path, rec in iter_records(paths, board.notes, training_runs=False, others=others):
        add_record(board, path, rec, manifests.of(path))
        board.n_files += 1
    board.n_skipped = sum(f not in benches for f in others)
    for entry in reported or []:
        add_reported(board, entry)
    if not board.tables:
        raise AdvloraError(f"no results files (schema advlora.results/1) under {', '.join(paths)}")
    for table in board.tables.values():
        for row in table.rows.values():
            if row.trainable is None and row.method in board.bench and board.bench[row.method].get("trainable"):
                row.trainable, row.trainable_from = int(board.bench[row.method]["trainable"]), "bench"
    return board


# ---- the page's data ----------------------------------------------------------------------------------------
def _stat(values: list[float]) -> list[float] | None:
    s = mean_spread(values)
    return None if s is None else [round(s[0], 4), round(s[1], 4)]


def table_data(table: Table, bench: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One table as the page reads it: its key, attack columns and rows (means and spreads, rank, Pareto
    membership of the two plots, the masking mark, provenance). Only measured tables are ranked."""
    rows = list(table.rows.values())
    out = []
    for r in rows:
        cost = bench.get(r.method) or {}
        out.append({"backbone": r.backbone, "method": r.method, "label": r.label, "family": r.family,
                    "objective": r.objective, "train_attack": r.train_attack, "trainable": r.trainable,
                    "trainable_from": r.trainable_from, "step_vs_lora": cost.get("step_vs_lora"),
                    "peak_vs_full": cost.get("peak_vs_full"), "clean": _stat(r.clean), "robust": _stat(r.robust),
                    "attacks": {a: _stat(v) for a, v in r.attacks.items()}, "suite": _stat(r.suite),
                    "seeds": len(r.seeds), "flagged": r.flagged, "verdict": r.verdict(), "source": r.source,
                    "provenance": r.provenance})
    # published numbers are measured under their own protocols: shown, never ranked nor put on a front
    ranked = [i for i, r in enumerate(out) if not r["flagged"] and r["robust"] is not None
              and table.key.kind == "measured"]
    for place, i in enumerate(sorted(ranked, key=lambda i: -out[i]["robust"][0]), 1):
        out[i]["rank"] = place
    for name, xs in (("pareto_clean", lambda r: r["clean"][0]),
                     ("pareto_params", lambda r: -r["trainable"] if r["trainable"] is not None else None)):
        idx = [i for i in ranked if xs(out[i]) is not None]
        front = pareto_front([(xs(out[i]), out[i]["robust"][0]) for i in idx])
        for i, on in zip(idx, front):
            out[i][name] = on
    k = table.key
    return {"id": k.ident(), "kind": k.kind, "task": k.task, "dataset": k.dataset, "threat": k.threat,
            "protocol": k.protocol, "metric": k.metric, "attacks": list(table.attacks), "rows": out}


def board_data(board: Board, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the page draws: measured tables, reported tables (apart), the bench's source, notes."""
    return {"meta": meta or {}, "bench_source": board.bench_source,
            "bench_size": next((r.get("size") for r in board.bench.values()), None), "n_files": board.n_files,
            "measured": [table_data(t, board.bench) for t in board.measured()],
            "reported": [table_data(t, {}) for t in board.reported()]}


__all__ = ["BENCH_FILE", "Board", "Row", "Table", "TableKey", "add_record", "add_reported", "board_data", "collect",
           "family_of", "mean_spread", "pareto_front", "read_bench", "table_data"]
