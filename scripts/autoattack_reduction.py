"""The AutoAttack comparison (``advlora bench``'s P8) alone: advlora's ``standard`` suite against torchattacks'
AutoAttack (standard version) on the same function, row by row, as the bench prints it.

Rows: the two one-caption retrieval reductions (image-to-text R@1 = accuracy of the caption classifier) and the
zero-shot classification reduction (a 7-class emoji set, prompt-ensembled classes), each with the suite at exit
rank 1 (AutoAttack's rule) and at its default (10 on retrieval; the largest k the task reports on
classification). Needs the cached tiny CLIP (``make demo`` or ``advlora pretrain``) and torchattacks 3.5.1
installed with ``--no-deps`` (plus scipy). Run: ``PYTHONPATH=src python scripts/autoattack_reduction.py [N]``
(N: test images per retrieval row, default 100); ``--norm l2 --eps 0.5`` compares under l2 (torchattacks'
``norm="L2"``), every row at that radius; ``--eps`` under linf puts every row at it too.
"""
from __future__ import annotations

import argparse
import sys

from advlora.bench import format_bench
from advlora.bench.suite_case import classification_row, have_torchattacks, reduction_rows

#: the radius of every row under l2 when ``--eps`` is not given (RobustBench's l2 track on CIFAR-10)
L2_EPS = "0.5"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("n", nargs="?", type=int, default=100, help="test images per retrieval row (default 100)")
    p.add_argument("--norm", default="linf", choices=("linf", "l2"), help="the threat model's norm (default linf)")
    p.add_argument("--eps", default=None, help="the radius of every row (default: linf 4/255 and 2/255 on the "
                   f"retrieval rows, 1/255 on classification; l2 {L2_EPS})")
    args = p.parse_args(argv)
    if not have_torchattacks():
        print("torchattacks is not importable: pip install --no-deps torchattacks==3.5.1 scipy", file=sys.stderr)
        return 2
    eps = args.eps or (L2_EPS if args.norm == "l2" else None)
    cls_kw = {"eps": eps} if eps else {}
    rows = reduction_rows(args.n, norm=args.norm, eps=eps) + [classification_row(norm=args.norm, **cls_kw)]
    lines = format_bench({"details": {"autoattack_rows": rows}, "ratios": {}, "met": {}}, rows_only=True)
    print(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
