"""``advlora results DIR...``: one table from the results files of many evaluations.

Every ``advlora eval`` / ``advlora attack`` writes one JSON per (model, adapter, data set, threat model) under its
run folder's ``results/`` (schema: docs/evaluation.md, "Results files"). This command finds them under each DIR
(recursively; a file may be named directly), reads a training run's final test from its ``metrics.json``, skips
files of another schema with a note on stderr, and prints one row per record: the model and adapter (method,
training objective), the data set and task, the threat model, the gallery size (images), the headline metric
(r_mean, or top1 for classification) clean and under the worst attack, and the sanity verdict. ``--reported
[FILE]`` prints published numbers (the shipped anchors, or FILE) in a table of their own, never among the measured
rows. ``--format NAME`` exports the results instead, as JSON documents or CSV on stdout, or as files under
``--out`` (docs/results-formats.md).
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
    "advlora results runs/eval-a runs/eval-b --sort robust --markdown   # most robust first, as markdown",
    "advlora results runs/ --reported                       # the published anchors in their own table",
    "advlora results runs/ --format robustbench --out export/   # model_info/<data>/<Linf|L2>/<name>.json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="run folders (evaluations, and training runs: their final test) or results files (searched "
                        "recursively)")
    p.add_argument("--markdown", action="store_true", help="a markdown table instead of plain text")
    p.add_argument("--sort", default="data", choices=("data", "model", "robust"),
                   help="row order: by data set, by model, or by robust metric, best first (default data)")
    p.add_argument("--reported", nargs="?", const="", default=None, metavar="FILE",
                   help="also print published numbers, in a table of their own (default: none; FILE omitted: the "
                        "shipped anchors)")
    p.add_argument("--format", default=None, metavar="NAME",
                   help="export instead of the table: advlora, clip-benchmark, robustbench or csv "
                        "(docs/results-formats.md; default: the table)")
    p.add_argument("--out", default=None, metavar="FOLDER",
                   help="with --format: write one file per document under FOLDER, named as the format's tools "
                        "expect (default: print to stdout)")


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
            "threat": "clean only" if th is None else f"{th['norm']} {th['eps_str']}", "gallery": rec["n_images"],
            "metric": metric, "clean": rec["clean"].get(metric),
            "robust": None if robust is None else robust["metrics"].get(metric),
            "attack": "-" if robust is None else robust["attack"].split("@")[0],
            "trained on": "yes" if rec["data"] in (rec["trained_on"] or []) else "no",
            "sanity": "ok" if verdict.startswith("no sign") else ("-" if verdict == "-" else "FLAGGED")}


COLUMNS = ["model", "adapter", "method", "task", "threat", "gallery", "metric", "clean", "robust", "attack",
           "trained on",
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
    return metrics_table(keyed, columns=COLUMNS, markdown=markdown, first="data") + "\n" + GALLERY_NOTE


#: printed under the measured table: what the gallery column means, and why rows of other galleries differ
GALLERY_NOTE = ("gallery: the images evaluated (each ranked against all their captions); r_mean falls as the gallery "
                "grows, so compare rows of the same gallery size only")

REPORTED_COLUMNS = ["data", "method", "task", "threat", "metric", "clean", "robust", "attack", "source"]


def reported_row(entry) -> dict:
    """One row of the reported table (a ``Result`` of kind reported)."""
    return {"data": entry.data, "method": (entry.method or "-") + (f" ({entry.objective})" if entry.objective
                                                                     else ""),
            "task": entry.task, "threat": "clean only" if entry.threat is None else entry.threat.label(),
            "metric": entry.headline, "clean": entry.clean.get(entry.headline),
            "robust": None if entry.robust is None else entry.robust.get(entry.headline),
            "attack": entry.attack_name or "-", "source": (entry.source or "-").split(";")[0]}


def render_all(results: list, *, markdown: bool = False, sort: str = "data") -> str:
    """The measured table (results files only), then, when there are any, the reported entries in a table of
    their own under a label that says they are published numbers; the two are never mixed."""
    from advlora.report.tables import metrics_table

    measured = [r.record for r in results if r.kind == "measured"]
    reported = [r for r in results if r.kind == "reported"]
    parts = [render(measured, markdown=markdown, sort=sort)] if measured else []
    if reported:
        rows = [(r.model if r.threat is None else f"{r.model} @ {r.threat.eps_str}", reported_row(r))
                for r in reported]
        parts.append("reported (published numbers, not measured here; protocols differ between sources):\n"
                     + metrics_table(rows, columns=REPORTED_COLUMNS, markdown=markdown, first="model"))
    return "\n\n".join(parts)


def export(results: list, name: str, out: str | None) -> tuple[str, list[str]]:
    """The documents of ``results`` in format ``name``, as the text to print (``out`` None) or written as files
    under ``out``; and one note per result the format cannot hold."""
    from advlora.experiments import exports

    fmt = exports.get(name)
    docs, notes = exports.export_all(fmt, results)
    if fmt.render is not None:
        body = fmt.render([d for _, d in docs])
        files = {fmt.path(r, d): body for r, d in docs[:1]}
        text = body.rstrip("\n")
    else:
        files = {}
        for r, d in docs:
            rel = fmt.path(r, d)
            if rel in files:
                stem = rel[:-len(".json")]
                rel = next(f"{stem}-{i}.json" for i in range(2, len(docs) + 2) if f"{stem}-{i}.json" not in files)
            files[rel] = json.dumps(d, indent=2) + "\n"
        text = json.dumps([d for _, d in docs], indent=2)
    if out is None:
        return text, notes
    for rel, body in files.items():
        target = Path(out) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    return f"{len(files)} {fmt.name} files under {out}", notes


def run(args: argparse.Namespace) -> int:
    from advlora.experiments.reported import load_reported
    from advlora.experiments.results import Result, find_records

    found, notes = find_records(args.dirs)
    for n in notes:
        print(f"advlora results: {n}", file=sys.stderr)
    if not found:
        raise AdvloraError(f"no results files (schema advlora.results/1) under {', '.join(args.dirs)}")
    if args.out is not None and args.format is None:
        raise AdvloraError("--out writes an export: name its --format")
    results = [Result.from_record(r) for _, r in found]
    if args.reported is not None:
        results += load_reported(args.reported or None)
    if args.format is not None:
        text, skipped = export(results, args.format, args.out)
        for n in skipped:
            print(f"advlora results: {n}", file=sys.stderr)
        print(text)
        return 0
    print(render_all(results, markdown=args.markdown, sort=args.sort))
    print(f"{len(found)} results files")
    return 0
