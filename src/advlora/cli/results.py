"""``advlora results DIR...``: one table from the results files of many evaluations.

Every ``advlora eval`` / ``advlora attack`` writes one JSON per (model, adapter, data set, threat model) under
its run folder's ``results/`` (schema: docs/evaluation.md, "Results files"). This command finds them under each
DIR (recursively; a file may be named directly), skips files of another schema with a note on stderr, and
prints one row per record: the model and adapter (method, training objective), the data set and task, the
threat model, n, the headline metric (r_mean, or top1 for classification) clean and under the worst attack,
and the sanity verdict.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from advlora.cli.common import examples
from advlora.errors import AdvloraError

EXAMPLES = examples(
    "advlora results runs/                                  # every results file under runs/",
    "advlora results runs/eval-a runs/eval-b --sort robust --markdown   # most robust first, as markdown")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run folders or results files (searched recursively)")
    p.add_argument("--markdown", action="store_true", help="a markdown table instead of plain text")
    p.add_argument("--sort", default="data", choices=("data", "model", "robust"),
                   help="row order: by data set, by model, or by robust metric, best first (default data)")


def find_records(paths: list[str]) -> tuple[list[tuple[Path, dict]], list[str]]:
    """(path, record) of every valid results file under ``paths``, and one note per skipped JSON file."""
    from advlora.evaluation.sweep import check_record

    found, notes = [], []
    for p in map(Path, paths):
        if not p.exists():
            raise AdvloraError(f"{p}: no such file or folder")
        files = [p] if p.is_file() else sorted(p.rglob("*.json"))
        for f in files:
            try:
                rec = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                notes.append(f"{f}: not readable JSON ({type(e).__name__})")
                continue
            if not isinstance(rec, dict) or "schema" not in rec:
                continue   # manifest.json, metrics.json, ...: not results files
            problems = check_record(rec)
            if problems:
                notes.append(f"{f}: skipped ({'; '.join(problems)})")
                continue
            found.append((f, rec))
    return found, notes


def row(rec: dict) -> dict:
    """One table row of a results record."""
    th = rec["threat"]
    robust = rec["robust"]
    metric = rec["headline"]
    adapter = "-" if not rec["adapter"] else Path(str(rec["adapter"])).name
    method = rec["method"] or "-"
    if rec["objective"]:
        method += f" ({rec['objective']})"
    verdict = (rec["sanity"] or {}).get("verdict") or "-"
    return {"model": rec["model"] or "-", "adapter": adapter, "method": method, "task": rec["task"],
            "threat": "clean only" if th is None else f"{th['norm']} {th['eps_str']}", "n": rec["n_images"],
            "metric": metric, "clean": rec["clean"].get(metric),
            "robust": None if robust is None else robust["metrics"].get(metric),
            "attack": "-" if robust is None else robust["attack"].split("@")[0],
            "trained on": "yes" if rec["data"] in (rec["trained_on"] or []) else "no",
            "sanity": "ok" if verdict.startswith("no sign") else ("-" if verdict == "-" else "FLAGGED")}


COLUMNS = ["model", "adapter", "method", "task", "threat", "n", "metric", "clean", "robust", "attack", "trained on",
           "sanity"]


def render(records: list[dict], *, markdown: bool = False, sort: str = "data") -> str:
    from advlora.report.tables import metrics_table

    keyed = [(r["data"], row(r)) for r in records]
    if sort == "model":
        keyed.sort(key=lambda t: (t[1]["model"], t[1]["adapter"], t[0], t[1]["threat"]))
    elif sort == "robust":
        keyed.sort(key=lambda t: -(t[1]["robust"] if t[1]["robust"] is not None else float("-inf")))
    else:
        keyed.sort(key=lambda t: (t[0], t[1]["threat"], t[1]["model"], t[1]["adapter"]))
    rows = {f"{data} [{i}]" if any(d == data for d, _ in keyed[:i]) else data: r for i, (data, r) in enumerate(keyed)}
    return metrics_table(rows, columns=COLUMNS, markdown=markdown, first="data")


def run(args: argparse.Namespace) -> int:
    found, notes = find_records(args.dirs)
    for n in notes:
        print(f"advlora results: {n}", file=sys.stderr)
    if not found:
        raise AdvloraError(f"no results files (schema advlora.results/1) under {', '.join(args.dirs)}")
    print(render([r for _, r in found], markdown=args.markdown, sort=args.sort))
    print(f"{len(found)} results files")
    return 0
