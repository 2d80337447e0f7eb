"""``advlora demo``: the tiny CLIP adapted to emoji-downstream by six methods under one budget, and the paper's
claims."""
from __future__ import annotations

import argparse

from advlora.cli.common import add_jobs_argument, add_progress_argument, examples

ACCEPTS_OVERRIDES = True  # dotted overrides of the demo's grid config, e.g. --eval.limit 200
EXAMPLES = examples(
    "advlora demo --quick                        # the same comparison on a CI budget",
    "advlora demo --out runs/demo --jobs 2       # the full demo; rerun the same line to resume",
    "advlora demo --out runs/demo --report-only  # the report from the cells done so far")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo); an existing one resumes")
    p.add_argument("--quick", action="store_true", help="CI budget: the same comparison in at most 2 minutes")
    p.add_argument("--data", default=None, help="data set to adapt to (default: emoji-downstream)")
    p.add_argument("--forgetting-data", default=None,
                   help="data set every method is also evaluated on (default: emoji-source, the pre-training "
                        "data, unless --data is given; 'none': skip)")
    p.add_argument("--transfer-data", default=None,
                   help="comma list of further sets of the transfer table (default: emoji-cls, the emoji "
                        "classification set, unless --data is given; 'none': skip)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the report from the cells already complete (e.g. of an interrupted run)")
    add_jobs_argument(p, 0)
    add_progress_argument(p, "train cells done")
    p.add_argument("--tiny-test", action="store_true",
                   help="a random test-size CLIP and minimal budgets: checks the plumbing in seconds (tests)")


def run(args: argparse.Namespace) -> int:
    from advlora.cli.common import jobs
    from advlora.experiments.demo import CLASSIFICATION, SOURCE, run_demo
    from advlora.runs import check_experiment_out, mark_once

    overrides = list(args.overrides or [])
    if args.data:
        overrides += ["--datasets", f"[{args.data}]"]
    forget = args.forgetting_data or (None if args.data else SOURCE)
    extra = args.transfer_data or ("none" if args.data else CLASSIFICATION)
    transfer_sets = () if extra == "none" else tuple(s.strip() for s in extra.split(",") if s.strip())
    check_experiment_out(args.out, "demo")
    summary, table = run_demo(args.out, quick=args.quick, overrides=overrides, tiny_test=args.tiny_test,
                              report_only=args.report_only, jobs=jobs(args.jobs),
                              forgetting_data=None if forget == "none" else forget, transfer_data=transfer_sets,
                              progress=args.progress)
    mark_once(args.out, "demo")
    print(table)
    print(f"\nreport: {args.out}/report.md, {args.out}/report.html ({summary['elapsed_s']:.0f} s)")
    return 0

