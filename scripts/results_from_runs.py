#!/usr/bin/env python3
"""Write a summary file of docs/results/ from a grid's run folder and an ``advlora bench --methods`` run folder.

The tables are taken as the commands print them: the grid's main table per data set (``advlora.experiments.report.
table_rows``, the rows of its terminal table and report) with its threat models, and the bench's methods table
(``advlora.bench.methods_case.methods_rows``: trainable parameters, step time against LoRA's, peak memory against
full fine-tuning's, and the declared cause of a step over 1.5x LoRA's). Provenance: the commit is this
checkout's HEAD, the date today's, the CPU read from the machine; what the script cannot know (the run's wall
time, threads, load) comes from the flags or reads "not recorded". Then ``scripts/gen_results.py`` renders it.

    python scripts/results_from_runs.py --id grid-methods --grid runs/grid-methods --bench runs/bench-methods \\
        --title "..." --command "..." --wall "..." --threads "..." --load "..."
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUMMARIES = ROOT / "docs" / "results"
NOT_RECORDED = "not recorded"


def grid_tables(folder: Path) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """(tables, threat-model lines, the summary) of a grid's ``summary.json``: one table per data set."""
    from advlora.experiments.report import headline, table_rows, threat_lines

    summary = json.loads((folder / "summary.json").read_text())
    tables, threats = [], []
    for i, ds in enumerate(summary["datasets"]):
        header, rows = table_rows(summary, ds)
        n = header[3].split("=", 1)[1].rstrip(")") if "=" in header[3] else "?"
        square = (f"; Square on {header[-1].split('=', 1)[1].rstrip(')')}"
                  if len(header) > 4 and header[-1].startswith("clean (n=") else "")
        seeds, metric = len(summary["seeds"]), headline(summary["results"].get(ds, {}))
        tables.append({"id": "main" if i == 0 else f"main-{ds}",
                       "caption": f"{metric} (%) on {ds} (test, {n} images{square}); "
                                  f"{'one seed' if seeds == 1 else f'mean ± std over {seeds} seeds'}",
                       "columns": header, "rows": rows})
        threats += [t for t in threat_lines(summary, ds) if t not in threats]
    return tables, threats, summary


def bench_table(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(table, the bench result) of an ``advlora bench --methods`` run folder's ``bench.json``."""
    from advlora.bench.methods_case import methods_rows

    result = json.loads((folder / "bench.json").read_text())["methods"]
    header, rows = methods_rows(result)
    c = result["config"]
    caption = (f"cost per method at random {c['size']} size, batch {c['batch']}, rank {c['rank']}: the adversarial "
               f"training step (PGD-3 and an AdamW update) against LoRA's, medians of {c['repeats']} interleaved "
               f"rounds in one process; peak memory of two steps in a fresh process per method against full "
               f"fine-tuning's; a step over {result['slow_above']}x LoRA's names its cause")
    return {"id": "cost", "caption": caption, "columns": header, "rows": rows}, result


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or NOT_RECORDED


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return NOT_RECORDED


def build(args: argparse.Namespace) -> dict[str, Any]:
    """The summary file's content (the keys ``scripts/gen_results.py`` requires, and the tables)."""
    tables, threats, notes = [], [], list(args.note or [])
    gpu = "none"
    if args.grid:
        t, threats, _ = grid_tables(Path(args.grid))
        tables += t
    if args.bench:
        t, result = bench_table(Path(args.bench))
        tables.append(t)
        if result["machine"].get("cuda"):
            gpu = "present (the bench ran on the CPU)"
    if not tables:
        raise SystemExit("results_from_runs: give --grid, --bench or both")
    out = {"id": args.id, "title": args.title, "order": args.order, "command": args.command,
           "commit": args.commit or _commit(), "date": args.date or datetime.date.today().isoformat(),
           "machine": {"cpu": args.cpu or _cpu(), "cores": os.cpu_count() or NOT_RECORDED, "gpu": gpu,
                       "threads": args.threads, "load": args.load},
           "wall": args.wall, "tables": tables}
    if args.setup:
        out["setup"] = args.setup
    if threats:
        out["threat_models"] = threats
    if notes:
        out["notes"] = notes
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="A docs/results/<id>.json summary file from grid and bench run folders.")
    ap.add_argument("--id", required=True, help="the summary's id (its file name, its anchor in docs/results.md)")
    ap.add_argument("--title", required=True)
    ap.add_argument("--command", required=True, help="the command(s) that made the runs, as run")
    ap.add_argument("--grid", default=None, help="a grid's run folder (its summary.json)")
    ap.add_argument("--bench", default=None, help="an advlora bench --methods run folder (its bench.json)")
    ap.add_argument("--order", type=int, default=1000, help="position in docs/results.md (smaller first)")
    ap.add_argument("--wall", default=NOT_RECORDED, help="the runs' wall time, as measured")
    ap.add_argument("--threads", default=NOT_RECORDED, help="threads the runs used")
    ap.add_argument("--load", default=NOT_RECORDED, help="what else ran on the machine")
    ap.add_argument("--setup", default=None, help="one sentence on the setup, shown above the command")
    ap.add_argument("--note", action="append", help="a note under the tables (repeatable)")
    ap.add_argument("--commit", default=None, help="default: this checkout's HEAD")
    ap.add_argument("--date", default=None, help="default: today")
    ap.add_argument("--cpu", default=None, help="default: read from /proc/cpuinfo")
    ap.add_argument("--out", default=None, help="default: docs/results/<id>.json")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing summary file")
    args = ap.parse_args(argv)
    target = Path(args.out) if args.out else SUMMARIES / f"{args.id}.json"
    if target.exists() and not args.overwrite:
        print(f"results_from_runs: {target} exists (pass --overwrite to replace it)", file=sys.stderr)
        return 2
    summary = build(args)
    target.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {target}; now run scripts/gen_results.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
