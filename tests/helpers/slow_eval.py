"""``python tests/helpers/slow_eval.py SECONDS advlora-args...``: the advlora CLI with a sleep after every saved batch
of a robust evaluation, so that a test can signal an ``advlora eval`` between two of its batches."""
from __future__ import annotations

import sys
import time

from advlora.evaluation.distributed import EvalSession

if __name__ == "__main__":
    delay = float(sys.argv[1])
    save = EvalSession._save

    def slow_save(self, *args, **kwargs):
        save(self, *args, **kwargs)
        time.sleep(delay)

    EvalSession._save = slow_save
    from advlora.cli import main

    sys.exit(main(sys.argv[2:]))
