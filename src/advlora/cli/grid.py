"""``advlora grid --config grid.yaml``: methods x attacks x eps x data sets x seeds, resumable, one report.

    advlora grid --config grid-tiny-clip --jobs 2                       # cells in local worker processes
    advlora grid --config paper.yaml --out runs/paper --launcher submitit --slurm-partition gpu \
        --slurm-gpus-per-node 1 --slurm-time 240 --slurm-additional account=abc    # one SLURM job array
    advlora grid --status runs/paper                                    # done / running / failed / pending
"""
from __future__ import annotations

import argparse

from advlora.cli.common import (
    add_jobs_argument,
    add_progress_argument,
    add_seeds_argument,
    examples,
    jobs,
    seeds_overrides,
)
from advlora.errors import AdvloraError

ACCEPTS_OVERRIDES = True  # dotted overrides of the grid config, e.g. --eval.limit 200 --train.train.steps 40
EXAMPLES = examples(
    "advlora grid --config grid-tiny-clip --jobs 2                       # cells in local worker processes",
    "advlora grid --config paper.yaml --out runs/paper --launcher submitit --slurm-partition gpu \\",
    "    --slurm-gpus-per-node 1 --slurm-time 240 --slurm-additional account=abc    # one SLURM job array",
    "advlora grid --status runs/paper                                    # done / running / failed / pending")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="grid YAML, or the name of a shipped one: " + ", ".join(shipped_configs())
                        + " (advlora list configs; no default: required unless --status)")
    add_seeds_argument(p)
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the report from the cells already complete (e.g. of an interrupted run)")
    p.add_argument("--out", default=None, help="output folder (default: runs/grid-<name>); an existing one resumes")
    add_jobs_argument(p, 1)
    add_progress_argument(p, "train cells done (local launcher)")
    p.add_argument("--status", metavar="DIR", default=None,
                   help="list the cells of the grid folder DIR: done / running / failed / pending, with job ids "
                        "(default: run the grid)")
    c = p.add_argument_group("cluster (advlora[cluster]; docs/cluster.md)")
    c.add_argument("--launcher", choices=("local", "submitit"), default="local",
                   help="local: this machine (--jobs); submitit: one SLURM job array, one task per train cell")
    c.add_argument("--slurm-partition", default=None, help="sbatch --partition (default: the cluster's)")
    c.add_argument("--slurm-gpus-per-node", type=int, default=None, help="GPUs per task (default: none)")
    c.add_argument("--slurm-time", default="240", help="time limit per task: minutes, or H:MM:SS (default 240)")
    c.add_argument("--slurm-array-parallelism", type=int, default=64, help="tasks of the array running at once")
    c.add_argument("--slurm-cpus-per-task", type=int, default=None, help="sbatch --cpus-per-task (default: the "
                   "cluster's)")
    c.add_argument("--slurm-additional", action="append", metavar="KEY=VALUE",
                   help="another sbatch option, e.g. account=abc or qos=high (repeatable; default: none)")
    c.add_argument("--submitit-cluster", choices=("slurm", "local", "debug"), default=None,
                   help="submitit's executor (default: slurm where sbatch exists, else local processes)")
    c.add_argument("--wait", action="store_true", help="submitit: wait for the jobs, then print the summary")


def shipped_configs() -> list[str]:
    from importlib import resources

    return sorted(f.name[:-5] for f in resources.files("advlora.configs").iterdir()
                  if f.name.startswith("grid-") and f.name.endswith(".yaml"))


def resolve_config(name: str) -> str:
    """A path as given, or a shipped config by name (``grid-tiny-blip`` or ``grid-tiny-blip.yaml``)."""
    from importlib import resources
    from pathlib import Path

    if Path(name).exists():
        return name
    stem = name[:-5] if name.endswith(".yaml") else name
    if stem in shipped_configs():
        return str(resources.files("advlora.configs") / f"{stem}.yaml")
    return name  # load_yaml reports the missing file


def run(args: argparse.Namespace) -> int:
    from advlora.experiments.grid import run_grid
    from advlora.experiments.spec import load_grid_config
    from advlora.runs import check_experiment_out, mark_once

    if args.status:
        return _status(args.status)
    if not args.config:
        raise AdvloraError("--config is required (or --status DIR)")
    options = _options(args) if args.launcher == "submitit" else None  # malformed options fail first
    overrides = list(args.overrides or []) + seeds_overrides(args.seeds)
    cfg = load_grid_config(resolve_config(args.config), overrides)
    out = args.out or f"runs/grid-{cfg.name}"
    check_experiment_out(out, "grid")
    if options is not None and not args.report_only:
        return _submit(args, cfg, out, options)
    summary, table = run_grid(cfg, out, report_only=args.report_only, jobs=jobs(args.jobs), progress=args.progress)
    mark_once(out, "grid")
    print(table)
    print(f"\nreport: {out}/report.md, {out}/report.html ({summary['elapsed_s']:.0f} s)")
    return 0


def slurm_minutes(text: str) -> int:
    """``--slurm-time``: minutes (``240``) or ``H:MM:SS`` / ``D-HH:MM:SS`` as sbatch reads it."""
    try:
        if ":" not in text and "-" not in text:
            minutes = int(text)
        else:
            days, _, clock = text.rpartition("-")
            parts = [int(x) for x in clock.split(":")]
            h, m, s = ([0] * (3 - len(parts)) + parts) if len(parts) < 3 else parts
            minutes = int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)
    except ValueError:
        raise AdvloraError(f"--slurm-time {text!r}: expected minutes (240) or H:MM:SS (4:00:00)") from None
    if minutes < 1:
        raise AdvloraError(f"--slurm-time {text!r}: must be at least one minute")
    return minutes


def _options(args: argparse.Namespace):
    from advlora.experiments import cluster

    return cluster.SlurmOptions(cluster=args.submitit_cluster, partition=args.slurm_partition,
                                gpus_per_node=args.slurm_gpus_per_node, time_min=slurm_minutes(args.slurm_time),
                                array_parallelism=args.slurm_array_parallelism, cpus_per_task=args.slurm_cpus_per_task,
                                additional=cluster.parse_additional(args.slurm_additional))


def _submit(args: argparse.Namespace, cfg, out: str, options) -> int:
    from advlora.experiments import cluster
    from advlora.experiments.grid import run_grid

    submitted = cluster.submit(cfg, out, options)
    if submitted:
        print(f"submitted {len(submitted)} train cell(s) as one job array: "
              + ", ".join(str(j.job_id) for j in submitted))
    else:
        print("nothing to submit: every cell is complete, queued or running")
    if args.wait:
        for job in submitted:
            try:
                job.result()
            except Exception as e:  # noqa: BLE001 - a failed task: --status shows it, the others are summarised
                print(f"job {job.job_id} failed: {str(e).strip().splitlines()[-1][:300]}")
    rows = cluster.status(cfg, out)
    print(cluster.status_table(rows))
    if args.wait and all(r.state == "done" for r in rows):
        summary, table = run_grid(cfg, out, report_only=True)
        print(table)
        print(f"\nreport: {out}/report.md, {out}/report.html")
    else:
        print(f"follow with: advlora grid --status {out}; summary of the finished cells on demand: "
              f"advlora grid --config {args.config} --out {out} --report-only")
    return 0


def _status(folder: str) -> int:
    from pathlib import Path

    from advlora.experiments import cluster
    from advlora.experiments.spec import load_grid_config

    path = Path(folder) / "grid.yaml"
    if not path.is_file():
        raise AdvloraError(f"{folder}: not a grid folder (no grid.yaml)")
    rows = cluster.status(load_grid_config(path), folder)
    print(cluster.status_table(rows))
    return 0
