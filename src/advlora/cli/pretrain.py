"""``advlora pretrain``: train a tiny model (CLIP, BLIP, SigLIP) from scratch on ``emoji-source`` and cache it."""
from __future__ import annotations

import argparse

from advlora.cli.common import add_deprecated, examples

EXAMPLES = examples(
    "advlora pretrain --arch clip               # what --model tiny-clip loads (built on first use otherwise)",
    "advlora pretrain --arch blip --out runs/tiny-blip --epochs 4")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="clip", help="model family: clip | blip | siglip (default: clip)")
    p.add_argument("--out", default=None,
                   help="model folder (default: $ADVLORA_HOME/models/tiny-<arch>, what --model tiny-<arch> loads, "
                        "replaced when it exists); another existing one is refused, see --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out that advlora created (never a folder it did not create)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the batches")
    p.add_argument("--epochs", type=int, default=None, help="passes over the emoji (default: the tuned value)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default: the tuned value)")
    add_deprecated(p, "--batch", dest="batch_size", new="--batch-size", type=int)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the tuned value)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the cores other processes leave free, measured at the start)")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from advlora.io import advlora_home
    from advlora.report.tables import metrics_table
    from advlora.runs import check_out, mark_once
    from advlora.training.pretrain import default_config, pretrain

    cfg = default_config(args.arch)
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "threads": args.threads}
    over = {k: v for k, v in given.items() if v is not None}
    cfg = dataclasses.replace(cfg, **over)
    if args.out:        # the default, advlora's own cache, is rebuilt in place
        check_out(args.out, overwrite=args.overwrite)
    out = args.out or advlora_home() / "models" / f"tiny-{args.arch}"
    result = pretrain(args.arch, out, seed=args.seed, config=cfg)
    mark_once(out, "pretrain")
    print(f"tiny-{args.arch}: {result.steps} steps in {result.seconds:.0f} s on {result.threads} thread(s); "
          f"saved to {result.out}")
    print(metrics_table(result.metrics))
    return 0
