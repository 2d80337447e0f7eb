"""``advlora bench --data``'s distributed-evaluation figure: ``advlora eval`` under ``torchrun --nproc_per_node 2``
against the same evaluation in one process, side by side in one run.

Both sides get the machine's two cores: one process with two intra-op threads (``OMP_NUM_THREADS=2``) against two
processes with one thread each (``OMP_NUM_THREADS=1``), so that the comparison is between two ways of spending the
same cores, not between one core and two; one process with one thread runs beside them as the reference both
are read against (on a loaded machine a second intra-op thread can cost more than it gives). Each round runs the
three, each into its own ``--out``, each setup first in turn (the first of a round also warms the image cache);
the rounds' wall times (process start to exit, imports and model loading included) and the evaluation's own
seconds (``runs[*].seconds`` of ``metrics.json``: the clean and robust passes and the sanity checks, without the
start-up) are compared as medians. The results must agree sample by sample across the three: every attack's
per-image and per-caption ranks in ``metrics.json`` (``robust[key].ranks``) and its metrics row.

The model is the cached ``tiny-clip`` when it has been pre-trained, else the random test-size CLIP saved to a
folder once (other processes must read that folder: the random tokenizer is not reproducible across processes).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from advlora.errors import AdvloraError
from advlora.models import resolve_model_path, save_model
from advlora.models.tiny import random_model

#: the default case: the embedded emoji test split, PGD (its default 10 steps) and a cheap Square at 2/255
DEFAULT_ARGS = ("--data", "emoji", "--split", "test", "--limit", "64", "--attacks", "pgd,square",
                "--square-queries", "50", "--eps", "2/255")
#: seconds one evaluation may run before it counts as a failed launch
TIMEOUT_S = 900


def find_torchrun() -> str | None:
    """The ``torchrun`` of this Python's environment (next to ``sys.executable``), else the one on PATH."""
    beside = Path(sys.executable).parent / "torchrun"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("torchrun")


def bench_model(folder: Path) -> tuple[str, str]:
    """(model path, description): the cached ``tiny-clip``, else the random test CLIP saved into ``folder``."""
    try:
        return resolve_model_path("tiny-clip"), "tiny-clip"
    except AdvloraError:
        save_model(random_model("clip", "test", seed=0), folder)
        return str(folder), "random test-size CLIP"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cause(proc: subprocess.CompletedProcess) -> str:
    """The last non-empty line of a failed run's stderr (the CLI's one-line error, a traceback's last line)."""
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}, nothing on stderr"


def _launch(cmd: list[str], threads: int, label: str) -> float:
    """Run ``cmd`` with ``threads`` intra-op threads; its wall seconds. A failure raises ``RuntimeError``
    (one line)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{label}: no result after {TIMEOUT_S}s") from None
    except OSError as e:
        raise RuntimeError(f"{label}: could not start {cmd[0]} ({e.strerror or e})") from None
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{label} exited {proc.returncode}: {_cause(proc)}")
    return seconds


def _read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def compare_results(one: dict, two: dict) -> list[str]:
    """Where two ``metrics.json`` of the same evaluation disagree: per attack, differing image / caption ranks
    and a differing metrics row; the clean row too. Empty when they agree sample by sample."""
    problems = []
    if one["clean"] != two["clean"]:
        problems.append("clean metrics differ")
    for key in sorted(set(one["robust"]) | set(two["robust"])):
        a, b = one["robust"].get(key), two["robust"].get(key)
        if a is None or b is None:
            problems.append(f"{key} only in the {'two' if a is None else 'one'}-process result")
            continue
        for side, what in (("i2t", "image"), ("t2i", "caption")):
            ra, rb = a["ranks"][side], b["ranks"][side]
            if len(ra) != len(rb):
                problems.append(f"{key}: {len(ra)} vs {len(rb)} {what} ranks")
            elif ra != rb:
                problems.append(f"{key}: {sum(x != y for x, y in zip(ra, rb))} of {len(ra)} {what} ranks differ")
        if a["metrics"] != b["metrics"]:
            problems.append(f"{key}: metrics rows differ")
    return problems


#: the setups timed in each round: name -> (processes, intra-op threads of each)
SETUPS = {"1x2": (1, 2), "2x1": (2, 1), "1x1": (1, 1)}


def measure_distributed_eval(workdir: str | Path | None = None, *, eval_args: tuple[str, ...] = DEFAULT_ARGS,
                             model: str | None = None, repeats: int = 1) -> dict:
    """``advlora eval`` in 1 process x 2 threads and under ``torchrun`` in 2 processes x 1 thread, with 1 process x
    1 thread beside them as the reference both are read against, ``repeats`` rounds side by side (see the
    module's docstring).

    Returns ``status`` "ok" (with ``identical``, ``differences``, the medians per setup and the ratios), "absent"
    (no torchrun) or "failed" (``reason``: which launch failed and its cause, one line); never raises for a launch.
    """
    torchrun = find_torchrun()
    base = {"eval_args": list(eval_args), "setups": {k: f"{p} process{'es' * (p > 1)} x {t} thread{'s' * (t > 1)}"
                                                      for k, (p, t) in SETUPS.items()}}
    if torchrun is None or not torch.distributed.is_available():
        why = "torchrun not found (next to python or on PATH)" if torchrun is None else \
            "this torch was built without torch.distributed"
        return {**base, "status": "absent", "reason": why}
    with tempfile.TemporaryDirectory(prefix="advlora-bench-dist-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        if model is None:
            model, model_desc = bench_model(work / "model")
        else:
            model_desc = model
        base["model"] = model_desc
        cmd = ["-m", "advlora", "eval", "--model", str(model), "--device", "cpu", *eval_args]
        rounds = []
        for r in range(max(1, int(repeats))):
            names = list(SETUPS)[r % len(SETUPS):] + list(SETUPS)[:r % len(SETUPS)]   # each setup first in turn
            outs = {k: work / f"{k}-round{r}" for k in SETUPS}
            try:
                wall = {}
                for k in names:
                    procs, threads = SETUPS[k]
                    launcher = [sys.executable] if procs == 1 else \
                        [torchrun, "--nnodes", "1", "--nproc_per_node", str(procs), "--master_addr", "127.0.0.1",
                         "--master_port", str(_free_port())]
                    label = f"{'torchrun ' * (procs > 1)}{base['setups'][k]}"
                    wall[k] = _launch([*launcher, *cmd, "--out", str(outs[k])], threads, label)
                metrics = {k: _read_metrics(outs[k]) for k in SETUPS}
            except (RuntimeError, OSError, ValueError, KeyError) as e:
                return {**base, "status": "failed", "reason": str(e)}
            rounds.append({"order": names, "wall_s": wall,
                           "eval_s": {k: sum(run["seconds"] for run in m["runs"]) for k, m in metrics.items()},
                           "differences": [f"{k}: {d}" for k in ("2x1", "1x1")
                                           for d in compare_results(metrics["1x2"], metrics[k])],
                           "keys": sorted(metrics["1x2"]["robust"]), "n_images": metrics["1x2"]["n_images"],
                           "n_texts": metrics["1x2"]["n_texts"]})
    med = {what: {k: statistics.median(r[what][k] for r in rounds) for k in SETUPS} for what in ("wall_s", "eval_s")}
    differences = [d for r in rounds for d in r["differences"]]
    return {**base, "status": "ok", "identical": not differences, "differences": differences,
            "keys": rounds[0]["keys"], "n_images": rounds[0]["n_images"], "n_texts": rounds[0]["n_texts"],
            "rounds": rounds, **med, "wall_ratio": med["wall_s"]["2x1"] / med["wall_s"]["1x2"],
            "eval_ratio": med["eval_s"]["2x1"] / med["eval_s"]["1x2"]}


def format_distributed_eval(result: dict | None) -> str:
    """The one line ``advlora bench --data`` prints for the figure."""
    head = "distributed evaluation 2 vs 1 processes: "
    if result is None:
        return head + "not measured (--no-dist-eval)"
    if result["status"] == "absent":
        return head + f"not measured: {result['reason']}"
    if result["status"] == "failed":
        return head + f"launch failed: {result['reason']}"
    same = ("per-sample ranks identical" if result["identical"] else
            f"results DIFFER ({'; '.join(result['differences'][:3])})")
    n, w, e = len(result["rounds"]), result["wall_s"], result["eval_s"]
    return (head + f"{same} ({', '.join(result['keys'])}; {result['n_images']} images, {result['n_texts']} "
            f"captions, {result['model']}); 2 processes x 1 thread / 1 process x 2 threads: wall "
            f"{result['wall_ratio']:.2f} ({w['2x1']:.1f}s vs {w['1x2']:.1f}s), evaluation alone "
            f"{result['eval_ratio']:.2f} ({e['2x1']:.1f}s vs {e['1x2']:.1f}s); 1 process x 1 thread: wall "
            f"{w['1x1']:.1f}s, evaluation {e['1x1']:.1f}s{f' (medians of {n} rounds)' if n > 1 else ''}")


__all__ = ["DEFAULT_ARGS", "SETUPS", "bench_model", "compare_results", "find_torchrun", "format_distributed_eval",
           "measure_distributed_eval"]
