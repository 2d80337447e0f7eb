"""docs/leaderboard/: the embedded leaderboard, built from the results files kept under docs/leaderboard-data/.

Usage:
  python scripts/gen_leaderboard.py                      # rebuild docs/leaderboard/ (and docs/leaderboard.png)
  python scripts/gen_leaderboard.py --from RUN [RUN...]  # first replace docs/leaderboard-data/ by RUN's files

``--from`` copies, of each RUN folder (the grid-zoo run, a bench --methods run), its manifest.json (command,
commit, machine), every results file (schema advlora.results/1) and the bench.json of ``advlora bench
--methods``, keeping their paths under ``docs/leaderboard-data/<RUN's name>/``. The site is then built with
``advlora leaderboard docs/leaderboard-data --reported`` (the shipped published anchors), and the screenshot
taken in headless Chromium when it is installed (``make setup``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "leaderboard-data"
SITE = ROOT / "docs" / "leaderboard"
SHOT = ROOT / "docs" / "leaderboard.png"


def copy_run(run: Path, into: Path) -> int:
    """The manifest, results files and bench --methods file of ``run`` under ``into``; returns the files copied."""
    n = 0
    for f in sorted(run.rglob("*.json")):
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        keep = (f == run / "manifest.json" or (isinstance(doc, dict) and doc.get("schema") == "advlora.results/1")
                or (f.name == "bench.json" and isinstance(doc, dict) and "methods" in doc))
        if keep:
            target = into / f.relative_to(run)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            n += 1
    return n


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from advlora.cli import main as advlora
    from advlora.experiments.leaderboard import browser

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="runs", nargs="+", default=None, metavar="RUN")
    args = p.parse_args()
    if args.runs:
        shutil.rmtree(DATA, ignore_errors=True)
        for run in map(Path, args.runs):
            print(f"{copy_run(run, DATA / (run.name or run.resolve().name))} files from {run}")
    if not DATA.is_dir():
        print(f"no {DATA.relative_to(ROOT)}: run the grid-zoo config, then --from RUN", file=sys.stderr)
        return 2
    argv = ["leaderboard", str(DATA.relative_to(ROOT)), "--reported", "--out", str(SITE.relative_to(ROOT)),
            "--overwrite", "--title",
            "The embedded leaderboard: the runs under docs/leaderboard-data, on the tiny CLIP (docs/leaderboard.md)"]
    sys.argv = ["advlora", *argv]        # the site's manifest records the advlora command, not this script's
    code = advlora(argv)
    if code or browser.missing():
        print(f"screenshot: skipped ({browser.missing() or 'no site'})")
        return code
    with browser.page(SITE / "index.html", width=1400, height=1100) as d:
        d.save_screenshot(str(SHOT))
        errors = browser.console_errors(d)
    print(f"screenshot: {SHOT.relative_to(ROOT)}" + (f"; console errors: {errors}" if errors else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
