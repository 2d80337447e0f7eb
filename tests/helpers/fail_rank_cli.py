"""``python tests/helpers/fail_rank_cli.py RANK STEP advlora-args...``: the advlora CLI in which process
``RANK`` raises after training step ``STEP``, so that a test can check that one failing rank ends the whole job."""
from __future__ import annotations

import functools
import os
import sys

import advlora.training


def _fail(rank: int, at: int, step: int) -> None:
    if int(os.environ.get("RANK", 0)) == rank and step == at:
        raise RuntimeError(f"injected failure on rank {rank} after step {step}")


if __name__ == "__main__":
    rank, at = int(sys.argv[1]), int(sys.argv[2])
    advlora.training.train = functools.partial(advlora.training.train, on_step=functools.partial(_fail, rank, at))
    from advlora.cli import main

    sys.exit(main(sys.argv[3:]))
