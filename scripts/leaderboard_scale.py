"""The leaderboard at scale: N synthetic results files -> site, timed, with peak memory; sorting in Chromium.

Usage: python scripts/leaderboard_scale.py [--sizes 1000,10000] [--work DIR]

For each N: write N synthetic results files (one table, one row per file: the largest table the page can be
asked to sort), then build the site with ``advlora leaderboard`` in a fresh process and print its wall time and
peak RSS (the same process at every N, so the difference between sizes is what N costs: the table). Then open
the largest site in headless Chromium and time a click on a column header (sort of every row), three times.
The figures go into docs/performance.md by hand, with the machine and date.
"""
from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = """
import resource, sys, time
t0 = time.perf_counter()
from advlora.cli import main
code = main(["leaderboard", sys.argv[1], "--out", sys.argv[2]])
print(f"{time.perf_counter() - t0:.2f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
sys.exit(code)
"""
BASE = """
import resource, time
t0 = time.perf_counter()
import advlora.cli.leaderboard, advlora.experiments.leaderboard, advlora.runs
print(f"{time.perf_counter() - t0:.2f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
"""


def run_py(code: str, *args: str) -> list[str]:
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr)
    return done.stdout.strip().splitlines()[-1].split()


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from advlora.experiments.leaderboard import browser
    from advlora.experiments.leaderboard.synthetic import write_synthetic

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--work", default=None, help="folder for the files and sites (default: a temporary one)")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="advlora-lb-scale-"))
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}; {time.strftime('%Y-%m-%d')}")
    base_s, base_mb = run_py(BASE)
    print(f"imports alone (torch, the package): {base_s} s, peak RSS {base_mb} MiB")
    print(f"{'files':>7}  {'write s':>7}  {'build s':>7}  {'peak RSS MiB':>12}  {'data.js MiB':>11}")
    site = None
    for n in sizes:
        files, site = work / f"results-{n}", work / f"site-{n}"
        shutil.rmtree(site, ignore_errors=True)
        t0 = time.perf_counter()
        if len(list(files.glob("results/*.json"))) != n:    # a previous run's files of this size are kept
            shutil.rmtree(files, ignore_errors=True)
            write_synthetic(files, n, flagged_every=50)
        wrote = time.perf_counter() - t0
        build_s, peak_mb = run_py(BUILD, str(files), str(site))
        size = (site / "data.js").stat().st_size / 2**20
        print(f"{n:>7,}  {wrote:>7.1f}  {build_s:>7}  {peak_mb:>12}  {size:>11.1f}")
    if browser.missing():
        print(f"browser: skipped ({browser.missing()})")
        return
    with browser.page(site / "index.html") as d:
        t0 = time.perf_counter()
        d.execute_script("return document.readyState")
        rows = d.execute_script("return document.querySelectorAll('table[data-kind=measured] tr.row').length")
        total = d.execute_script("return window.LEADERBOARD.measured[0].rows.length")
        print(f"page open with {total:,} rows ({rows} drawn): {time.perf_counter() - t0:.2f} s after load")
        for col in ("robust r_mean", "method", "robust r_mean"):
            ms = d.execute_script(
                "const th = document.querySelector(`th[data-col='${arguments[0]}']`);"
                "const t0 = performance.now(); th.click(); document.body.offsetHeight;"
                "return performance.now() - t0;", col)
            print(f"sort {total:,} rows by {col!r}: {ms:.0f} ms (click to laid-out DOM, {rows} rows drawn)")
        errors = browser.console_errors(d)
        print(f"console errors: {len(errors)}")
    print(f"files and sites under {work}")


if __name__ == "__main__":
    main()
