"""``advlora analyze RUN_DIR``: singular spectra and effective ranks of dW = W - W0, and alpha statistics."""
from __future__ import annotations

import argparse

from advlora.cli.common import examples

EXAMPLES = examples("advlora analyze runs/a                     # one training run",
                    "advlora analyze runs/demo --out runs/spectra   # every trained cell of a demo or grid")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a training run folder, a grid/demo cell, or a whole grid/demo folder (every trained cell)")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/analysis)")


def run(args: argparse.Namespace) -> int:
    from advlora.experiments.analyze import analyze

    _, text, out = analyze(args.run_dir, args.out)
    print(text)
    print(f"\nreport: {out}/report.md, {out}/report.html")
    return 0
