"""``advlora ablate``: AdvLoRA's parts (init, alignment, alpha, start mode, rank) on and off under one budget."""
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

ACCEPTS_OVERRIDES = True  # dotted overrides of the ablation's grid config, e.g. --eval.limit 300
EXAMPLES = examples(
    "advlora ablate --quick                          # plumbing check in a few minutes",
    "advlora ablate --seeds 0,1,2 --out runs/ablate  # mean and spread over three seeds; rerun to resume")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the report from the cells already complete (e.g. of an interrupted run)")
    p.add_argument("--out", default="runs/ablate",
                   help="output folder (default: runs/ablate); an existing one resumes")
    p.add_argument("--steps", type=int, default=None,
                   help="optimiser steps of every variant's training (default 150, batch 64)")
    add_seeds_argument(p)
    p.add_argument("--quick", action="store_true", help="tiny budgets: checks the plumbing in a few minutes")
    p.add_argument("--data", default=None, help="data set (default: the embedded emoji benchmark)")
    add_jobs_argument(p, 0)
    add_progress_argument(p, "train cells done")
    p.add_argument("--tiny-test", action="store_true", help="a random test-size CLIP and minimal budgets (tests)")


def run(args: argparse.Namespace) -> int:
    from advlora.experiments.ablate import run_ablation
    from advlora.runs import check_experiment_out, mark_once

    if args.steps is not None and args.steps < 1:
        raise AdvloraError(f"--steps must be >= 1, got {args.steps}")
    overrides = list(args.overrides or []) + seeds_overrides(args.seeds)
    if args.data:
        overrides += ["--datasets", f"[{args.data}]"]
    check_experiment_out(args.out, "ablate")
    summary, table = run_ablation(args.out, quick=args.quick, steps=args.steps, overrides=overrides,
                                  tiny_test=args.tiny_test, report_only=args.report_only,
                                  jobs=jobs(args.jobs), progress=args.progress)
    mark_once(args.out, "ablate")
    print(table)
    print(f"\nreport: {args.out}/report.md, {args.out}/report.html ({summary['elapsed_s']:.0f} s)")
    return 0
