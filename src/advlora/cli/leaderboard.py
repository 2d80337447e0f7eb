"""``advlora leaderboard DIR... --out SITE``: the results files under DIR as a static, sortable web page.

One table per task x data set x threat model x protocol (rows: backbone x method x objective, seeds as mean +-
spread, the robust number per attack, the suite's, the sanity verdict, each seed's provenance), the cost of every
method from the ``bench.json`` of ``advlora bench --methods`` found under DIR, plots of robust against clean and
against trainable parameters with their Pareto fronts, and with ``--reported`` the published numbers in tables
of their own (docs/leaderboard.md). The site is ``index.html`` with its script, stylesheet and ``data.js``: no
server, nothing fetched.
"""
from __future__ import annotations

import argparse
import sys

from advlora.cli.common import add_out_arg, examples

EXAMPLES = examples(
    "advlora leaderboard runs/ --out site/                    # every results file under runs/",
    "advlora leaderboard runs/grid-zoo runs/bench-methods --reported --out site/   # with costs and the anchors",
    "advlora leaderboard runs/ --reported my-papers.yaml --out site/ --overwrite   # your own published numbers")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="run folders or results files (searched recursively for results files and for the "
                        "bench.json of advlora bench --methods)")
    p.add_argument("--reported", nargs="?", const="", default=None, metavar="FILE",
                   help="also show published numbers, in tables of their own (FILE omitted: the shipped anchors; "
                        "default: none)")
    p.add_argument("--title", default=None, help="a line under the page's heading (default: none)")
    add_out_arg(p, "leaderboard")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from advlora.experiments.leaderboard import board_data, collect
    from advlora.experiments.leaderboard.site import write_site
    from advlora.experiments.reported import load_reported
    from advlora.runs import check_out, default_out, manifest, run_folder

    out = Path(args.out or default_out("leaderboard"))
    check_out(out, overwrite=args.overwrite)
    reported = load_reported(args.reported or None) if args.reported is not None else None
    board = collect(args.dirs, reported)
    for n in board.notes:
        print(f"advlora leaderboard: {n}", file=sys.stderr)
    man = manifest()
    meta = {"command": man["command"], "commit": man["git_commit"], "machine": man["platform"], "time": man["time"],
            "title": args.title}
    data = board_data(board, meta)
    with run_folder(out, {"dirs": list(args.dirs), "reported": args.reported}, command="leaderboard") as tmp:
        write_site(data, tmp)
    rows = sum(len(t["rows"]) for t in data["measured"])
    print(f"{len(data['measured'])} measured tables ({rows} rows from {board.n_files} results files; "
          f"{board.n_skipped} other JSON files skipped: no evaluation results record), "
          f"{len(data['reported'])} reported tables; cost figures: {board.bench_source or 'none'}")
    print(f"site: {out}/index.html")
    return 0
