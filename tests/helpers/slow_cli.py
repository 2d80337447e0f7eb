"""``python tests/helpers/slow_cli.py SECONDS advlora-args...``: the advlora CLI with a sleep after every training
step, so that a test can kill or signal a run between two of its checkpoints."""
from __future__ import annotations

import functools
import sys
import time

import advlora.training

if __name__ == "__main__":
    delay = float(sys.argv[1])
    advlora.training.train = functools.partial(advlora.training.train, on_step=lambda step: time.sleep(delay))
    from advlora.cli import main

    sys.exit(main(sys.argv[2:]))
