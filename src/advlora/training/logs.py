"""Run logs: ``history.csv`` (one row per logged step), ``epochs.csv`` (validation per epoch) and TensorBoard.

Columns of ``history.csv``: step, epoch, loss, loss parts, lr, alpha_lr, the step's time split, then
``alpha/<layer>`` per adapted layer and ``alpha_mean/<tower>``. On resume, rows after the checkpoint's step are
dropped so that the files read as one uninterrupted run. Only the main process writes.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from advlora.io import atomic_write_text

STEP_COLUMNS = ["step", "epoch", "loss", "itc", "kl", "itm", "reg", "lr", "alpha_lr", "time_attack_s",
                "time_forward_backward_s", "time_optimizer_s"]
EPOCH_COLUMNS = ["epoch", "step", "clean_r_mean", "robust_r_mean", "threat"]


def alpha_row(alphas: dict[str, float], tower_of) -> dict[str, float]:
    """``alpha/<layer>`` columns and their mean per tower (``alpha_mean/vision``...)."""
    row = {f"alpha/{k}": float(v) for k, v in alphas.items()}
    towers: dict[str, list[float]] = {}
    for k, v in alphas.items():
        towers.setdefault(tower_of(k) or "other", []).append(float(v))
    row.update({f"alpha_mean/{t}": sum(v) / len(v) for t, v in towers.items()})
    return row


class RunLogger:
    def __init__(self, folder: Path, alpha_columns: list[str], *, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.history = folder / "history.csv"
        self.epochs = folder / "epochs.csv"
        self.columns = STEP_COLUMNS + alpha_columns
        self.tb = None
        if not enabled:
            return
        _start(self.history, self.columns, "step", resume_step)
        _start(self.epochs, EPOCH_COLUMNS, "step", resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(folder / "tb"), purge_step=None if resume_step is None else resume_step + 1)

    def step(self, row: dict) -> None:
        if not self.enabled:
            return
        _append(self.history, self.columns, row)
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k if "/" in k else f"train/{k}", v, row["step"])

    def epoch(self, row: dict) -> None:
        if not self.enabled:
            return
        _append(self.epochs, EPOCH_COLUMNS, row)
        if self.tb is not None:
            for k in ("clean_r_mean", "robust_r_mean"):
                if isinstance(row.get(k), (int, float)):
                    self.tb.add_scalar(f"val/{k}", row[k], row["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _start(path: Path, columns: list[str], key: str, resume_step: int | None) -> None:
    """A fresh file with the header, or (resume) the existing rows up to ``resume_step``."""
    rows: list[dict] = []
    if resume_step is not None and path.is_file():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if _int(r.get(key)) <= resume_step]
    lines = [",".join(columns)] + [",".join(_cell(r.get(c)) for c in columns) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _append(path: Path, columns: list[str], row: dict) -> None:
    with path.open("a", newline="") as f:
        f.write(",".join(_cell(row.get(c)) for c in columns) + "\n")


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    s = str(v)
    return f'"{s}"' if "," in s else s


def _int(v) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return 1 << 62


__all__ = ["RunLogger", "alpha_row"]
