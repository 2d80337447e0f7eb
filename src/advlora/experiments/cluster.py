"""Experiment grids on a cluster through submitit: one job array, one task per train cell (its training, then
its evaluations), preemptible and requeued.

``submit(cfg, root, SlurmOptions(...))`` writes the grid folder as ``advlora grid`` does (``grid.start``: a
folder whose complete cells another config made is refused), then submits every train cell with something left
to run as one array. A task (``CellTask``) runs ``grid.run_cells``; complete cells are skipped, so a second
submission of the same grid submits only what is unfinished. A training stopped by SLURM's preemption or
time-limit signal writes a checkpoint at its step (``advlora.preempt``); the task then hands over to submitit,
which calls ``CellTask.checkpoint`` (a ``DelayedSubmission`` of the same cell with ``resume=True``) and requeues
it. The last task to finish writes the summary and report. ``jobs.json`` in the grid folder records each cell's
job id, attempts and log files, which ``status(cfg, root)`` reads: done / running / failed / pending.

submitit is an optional dependency (``pip install 'advlora[cluster]'``). docs/cluster.md walks through a
cluster run.
"""
from __future__ import annotations

import json
import logging
import pickle
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlora.errors import AdvloraError
from advlora.experiments import cells as C
from advlora.experiments import grid as G
from advlora.experiments.spec import GridConfig, TrainCell, train_cells
from advlora.io import write_json
from advlora.plugins import load_plugins
from advlora.preempt import Preempted

log = logging.getLogger(__name__)

#: a cell whose job failed this many times is not submitted again until its cause is fixed
MAX_ATTEMPTS = 3
JOBS = "jobs.json"
STATES = ("done", "running", "failed", "pending")


def _submitit():
    try:
        import submitit  # optional: only this launcher needs it
    except ImportError:
        raise AdvloraError("--launcher submitit needs submitit: pip install 'advlora[cluster]'") from None
    return submitit


@dataclass
class SlurmOptions:
    """The scheduler settings of a submission (submitit's ``AutoExecutor`` parameters).

    Attributes:
        cluster: None picks SLURM when ``sbatch`` is on PATH, else submitit's local executor; or slurm | local |
            debug (debug runs the tasks in this process).
        partition, gpus_per_node, time_min, array_parallelism, cpus_per_task: sbatch's --partition, --gpus-per-node,
            --time (minutes), the array's %limit, --cpus-per-task.
        additional: further sbatch options (``{"account": "abc", "qos": "high"}``).
        signal_delay_s: SIGUSR2 this long before the time limit, so that a training checkpoints and requeues.
    """

    cluster: str | None = None
    partition: str | None = None
    gpus_per_node: int | None = None
    time_min: int = 240
    array_parallelism: int = 64
    cpus_per_task: int | None = None
    additional: dict[str, str] = field(default_factory=dict)
    signal_delay_s: int = 120

    def parameters(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "timeout_min": self.time_min, "slurm_signal_delay_s": self.signal_delay_s,
                               "slurm_array_parallelism": self.array_parallelism}
        for key, value in (("slurm_partition", self.partition), ("gpus_per_node", self.gpus_per_node),
                           ("cpus_per_task", self.cpus_per_task)):
            if value is not None:
                out[key] = value
        if self.additional:
            out["slurm_additional_parameters"] = dict(self.additional)
        return out


def parse_additional(items: list[str] | None) -> dict[str, str]:
    """``["account=abc", "qos=high"]`` (``--slurm-additional KEY=VALUE``) -> a dict; a malformed item is one line."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise AdvloraError(f"--slurm-additional {item!r}: expected KEY=VALUE, e.g. account=abc")
        out[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    return out


class CellTask:
    """One train cell and its eval cells, as a checkpointable submitit task.

    ``on_step`` is passed to the trainer (called with the step number after every step).
    """

    def __init__(self, cfg: GridConfig, root: str | Path, on_step: Callable[[int], None] | None = None) -> None:
        self.cfg, self.root, self.on_step = cfg, str(root), on_step

    def __call__(self, cell: TrainCell, resume: bool = False) -> str:
        root = Path(self.root)
        load_plugins()  # the job imports the submitting process's plugins (named in ADVLORA_PLUGINS)
        if resume:
            log.info("%s: requeued, continuing from its last checkpoint", cell.key)
        try:
            G.run_cells(self.cfg, root, cell, on_step=self.on_step)
        except Preempted as e:
            log.warning("%s: %s", cell.key, e)
            _requeue()  # submitit calls checkpoint() and requeues; returns only outside a submitit job
            raise
        if all(G.all_complete(self.cfg, tc, root) for tc in train_cells(self.cfg)):
            G.run_grid(self.cfg, root, report_only=True)  # the last cell to finish writes the report
        return cell.key

    def checkpoint(self, cell: TrainCell, resume: bool = False) -> Any:
        """submitit's hook on preemption / time-out: the same cell again, resuming its training."""
        return _submitit().helpers.DelayedSubmission(self, cell, resume=True)


def _requeue() -> None:
    """Inside a submitit job, raise submitit's own preemption signal: its handler checkpoints and requeues."""
    submitit = _submitit()
    try:
        submitit.JobEnvironment()
    except RuntimeError:
        return  # not a submitit job: the caller re-raises
    signal.raise_signal(getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG))


# ---- submission -----------------------------------------------------------------------------------------------
def read_jobs(root: Path) -> dict[str, dict]:
    path = Path(root) / JOBS
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise AdvloraError(f"{path}: not valid JSON (delete it to resubmit every unfinished cell)") from None


def submit(cfg: GridConfig, root: str | Path, options: SlurmOptions, *,
           on_step: Callable[[int], None] | None = None) -> list:
    """Submit every unfinished train cell of ``cfg`` as one job array; returns submitit's jobs (none when every
    cell is complete). A cell whose job is still queued or running is not submitted twice; one that failed
    ``MAX_ATTEMPTS`` times is left out, with one line naming it."""
    submitit = _submitit()
    root = Path(root)
    todo = G.start(cfg, root)
    jobs = read_jobs(root)
    cells = []
    for tc in todo:
        rec = jobs.get(tc.key)
        state = _state(cfg, root, tc, rec)
        if state in ("running", "pending") and rec is not None and _alive(submitit, root, rec):
            log.info("%s: job %s is still %s; not submitted again", tc.key, rec["job_id"], state)
            continue
        if state == "failed" and rec.get("attempts", 0) >= MAX_ATTEMPTS:
            log.error("%s: failed %d times (%s); not submitted again: fix the cause, then delete its entry in %s",
                      tc.key, rec["attempts"], _last_line(rec), root / JOBS)
            continue
        cells.append(tc)
    if not cells:
        return []
    try:
        executor = submitit.AutoExecutor(folder=str(root / "submitit"), cluster=options.cluster)
        executor.update_parameters(**options.parameters(f"advlora-{cfg.name}"))
    except (RuntimeError, ValueError, NameError) as e:  # no srun/sbatch here, or a parameter submitit refuses
        raise AdvloraError(f"submitit cannot submit here: {_first_line(str(e))}") from None
    try:
        submitted = executor.map_array(CellTask(cfg, root, on_step), cells)
    except (submitit.core.utils.FailedSubmissionError, submitit.core.utils.FailedJobError) as e:
        raise AdvloraError(f"sbatch refused the job array: {_first_line(str(e))}") from None
    for tc, job in zip(cells, submitted):
        attempts = jobs.get(tc.key, {}).get("attempts", 0) + 1
        jobs[tc.key] = {"job_id": str(job.job_id), "attempts": attempts, "stdout": str(job.paths.stdout),
                        "stderr": str(job.paths.stderr), "result": str(job.paths.result_pickle)}
    write_json(root / JOBS, jobs)
    return submitted


def _alive(submitit, root: Path, rec: dict) -> bool:
    """Whether the scheduler still holds the job (SLURM only; a local job dies with its submitting process)."""
    if submitit.AutoExecutor.which() != "slurm":
        return False
    try:
        state = submitit.SlurmJob(folder=str(root / "submitit"), job_id=rec["job_id"]).state
    except Exception:  # noqa: BLE001 - sacct may be unavailable; then the cell is resubmitted
        return False
    return state in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED")


# ---- status ---------------------------------------------------------------------------------------------------
@dataclass
class CellStatus:
    key: str
    state: str
    job_id: str | None = None
    attempts: int = 0
    #: the last line of the failed task's log
    last_line: str = ""


def status(cfg: GridConfig, root: str | Path) -> list[CellStatus]:
    """Every train cell of ``cfg`` under ``root``: done (its training and evaluations complete), failed (its last
    job ended with an error), running (its job wrote a log), or pending (queued, or never submitted)."""
    root = Path(root)
    jobs = read_jobs(root)
    out = []
    for tc in train_cells(cfg):
        rec = jobs.get(tc.key)
        state = _state(cfg, root, tc, rec)
        out.append(CellStatus(tc.key, state, rec["job_id"] if rec else None, rec.get("attempts", 0) if rec else 0,
                              _last_line(rec) if state == "failed" else ""))
    return out


def _state(cfg: GridConfig, root: Path, tc: TrainCell, rec: dict | None) -> str:
    if G.all_complete(cfg, tc, root):
        return "done"
    if rec is None:
        return "pending"
    result = Path(rec["result"])
    if result.is_file() and _result_failed(result):
        return "failed"
    if Path(rec["stdout"]).is_file() or C.is_complete(root / "cells" / tc.key):
        return "running"
    return "pending"


def _result_failed(path: Path) -> bool:
    """submitit's result pickle holds ("success", value) or ("error", traceback)."""
    try:
        with path.open("rb") as f:
            kind = pickle.load(f)[0]  # written by submitit for this grid's own jobs
    except Exception:  # noqa: BLE001 - a result being written: not failed yet
        return False
    return kind == "error"


def _last_line(rec: dict | None) -> str:
    """The last non-empty line of the job's stderr (the exception), else of its stdout."""
    if rec is None:
        return ""
    for key in ("stderr", "stdout"):
        path = Path(rec.get(key, ""))
        if path.is_file():
            lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
            if lines:
                return lines[-1][:300]
    return ""


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or [""])[0][:300]


def status_table(rows: list[CellStatus]) -> str:
    """The lines ``advlora grid --status`` prints: one per cell, then the counts."""
    width = max([len(r.key) for r in rows] + [4])
    lines = [f"{'cell':<{width}}  {'state':<8} {'job':<14} attempts"]
    for r in rows:
        line = f"{r.key:<{width}}  {r.state:<8} {r.job_id or '-':<14} {r.attempts}"
        if r.last_line:
            line += f"  | {r.last_line}"
        lines.append(line)
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(rows)} cells")
    return "\n".join(lines)


__all__ = ["CellStatus", "CellTask", "MAX_ATTEMPTS", "SlurmOptions", "parse_additional", "read_jobs", "status",
           "status_table", "submit"]
