"""``advlora grid --config grid.yaml``: methods x attacks x eps x data sets x seeds, resumable, one report."""
from __future__ import annotations

import argparse

from advlora.cli.common import add_jobs_argument, add_seeds_argument, jobs, seeds_overrides

ACCEPTS_OVERRIDES = True  # dotted overrides of the grid config, e.g. --eval.limit 200 --train.train.steps 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True,
                   help="grid YAML, or the name of a shipped one: " + ", ".join(shipped_configs()))
    add_seeds_argument(p)
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the report from the cells already complete (e.g. of an interrupted run)")
    p.add_argument("--out", default=None, help="output folder (default: runs/grid-<name>); an existing one resumes")
    add_jobs_argument(p, 1)


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

    overrides = list(args.overrides or []) + seeds_overrides(args.seeds)
    cfg = load_grid_config(resolve_config(args.config), overrides)
    out = args.out or f"runs/grid-{cfg.name}"
    summary, table = run_grid(cfg, out, report_only=args.report_only, jobs=jobs(args.jobs))
    print(table)
    print(f"\nreport: {out}/report.md, {out}/report.html ({summary['elapsed_s']:.0f} s)")
    return 0
