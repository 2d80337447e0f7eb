"""The AutoAttack comparison (``advlora bench``'s P8) alone: advlora's ``standard`` suite against torchattacks'
AutoAttack (standard version) on the same function, row by row, as the bench prints it.

Rows: the two one-caption retrieval reductions (image-to-text R@1 = accuracy of the caption classifier) and the
zero-shot classification reduction (a 7-class emoji set, prompt-ensembled classes), each with the suite at exit
rank 1 (AutoAttack's rule) and at its default (10 on retrieval; the largest k the task reports on
classification). Needs the cached tiny CLIP (``make demo`` or ``advlora pretrain``) and torchattacks 3.5.1
installed with ``--no-deps`` (plus scipy). Run: ``PYTHONPATH=src python scripts/autoattack_reduction.py [N]``
(N: test images per retrieval row, default 100).
"""
from __future__ import annotations

import sys

from advlora.bench import format_bench
from advlora.bench.suite_case import classification_row, have_torchattacks, reduction_rows


def main(n: int) -> int:
    if not have_torchattacks():
        print("torchattacks is not importable: pip install --no-deps torchattacks==3.5.1 scipy", file=sys.stderr)
        return 2
    rows = reduction_rows(n) + [classification_row()]
    lines = format_bench({"details": {"autoattack_rows": rows}, "ratios": {}, "met": {}}, rows_only=True)
    print(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
