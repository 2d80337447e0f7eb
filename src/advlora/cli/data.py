"""``advlora data``: build the embedded data sets (``emoji``, ``emoji-video``), check a data set on disk, or write
it as webdataset shards.

The data modules are imported inside ``run`` so that ``advlora --help`` does not import torch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from advlora.cli.common import add_parser, add_progress_argument, examples
from advlora.errors import EXIT_OK, EXIT_PROBLEMS

EXAMPLES = examples(
    "advlora data emoji                                        # build the embedded benchmark (cached)",
    "advlora data check coco/dataset_coco.json --image-root coco --split test   # exit 1 when problems are found",
    "advlora data shard coco/dataset_coco.json --image-root coco --split train --out shards/coco")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    e = add_parser(sub, "emoji", "render the emoji image-text benchmark into $ADVLORA_HOME/data/emoji",
                   example=examples("advlora data emoji",
                                    "advlora data emoji --force --out data/emoji   # rebuild into a folder of yours"))
    _build_args(e)
    v = add_parser(sub, "emoji-video", "render the emoji video-text benchmark",
                   example=examples("advlora data emoji-video"))
    _build_args(v)
    c = add_parser(sub, "check", "check an annotation file (or an embedded set) and its images; exit status 0 when "
                   "clean, 1 when it finds problems (a missing image included), 2 when PATH does not exist",
                   example=examples("advlora data check coco/dataset_coco.json --image-root coco --split test",
                                    "advlora data check emoji-cls --split test"))
    c.add_argument("path", help="annotation file, folder, or an embedded set's name as --data takes it (emoji, "
                   "emoji-cls, digits, ...)")
    c.add_argument("--format", dest="fmt", default=None, help="annotation format (default: detected)")
    c.add_argument("--split", default=None, help="split, for files holding several (Karpathy; default test)")
    c.add_argument("--image-root", default=None, help="folder the paths are relative to (default: the file's)")
    c.add_argument("--frames", type=int, default=None, help="frames sampled per video (default 8)")
    s = add_parser(sub, "shard", "write an annotation file's image-text pairs as webdataset shards",
                   example=examples("advlora data shard coco/dataset_coco.json --image-root coco --split train "
                                    "--out shards/coco --per-shard 1000"))
    s.add_argument("path", help="annotation file, any supported format (or emoji)")
    s.add_argument("--out", required=True, help="folder for the shards and sizes.json")
    s.add_argument("--format", dest="fmt", default=None, help="annotation format (default: detected)")
    s.add_argument("--split", default="train", help="split, for files holding several")
    s.add_argument("--image-root", default=None, help="folder the paths are relative to (default: the file's)")
    s.add_argument("--per-shard", type=int, default=1000, help="samples per shard")
    add_progress_argument(s, "images written, with the ETA")


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--font", default=None, help="path of a colour emoji font (default: Noto Color Emoji)")
    p.add_argument("--force", action="store_true", help="rebuild even when a finished build is cached")
    p.add_argument("--out", default=None, help="folder to build into (default: $ADVLORA_HOME/data/...)")
    p.add_argument("--seed", type=int, default=0, help="seed of the renders' backgrounds, scales and positions")


def run(args: argparse.Namespace) -> int:
    if args.action == "check":
        from advlora.data.check import check_dataset

        report = check_dataset(args.path, fmt=args.fmt, split=args.split, image_root=args.image_root,
                               frames=args.frames)
        print(report)
        return EXIT_OK if report.ok else EXIT_PROBLEMS
    if args.action == "shard":
        from advlora.data import load_dataset
        from advlora.data.shards import write_shards

        ds = load_dataset(args.path, args.split, fmt=args.fmt, image_root=args.image_root)
        pattern = write_shards(ds, args.out, per_shard=args.per_shard, progress=args.progress)
        print(f"{len(ds)} images, {len(ds.captions)} captions in shards {pattern}")
        return 0
    if args.action == "emoji":
        from advlora.data.emoji import build_emoji as build
    else:
        from advlora.data.emoji_video import build_emoji_video as build
    root = build(args.out, font_path=args.font, seed=args.seed, force=args.force)
    _print_summary(root)
    return 0


def _print_summary(root) -> None:
    root = Path(root)
    for split in ("train", "val", "test"):
        f = root / f"{split}.jsonl"
        if f.exists():
            lines = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
            n_caps = sum(len(r.get("captions", [])) for r in lines)
            print(f"{split:>5}: {len(lines)} items, {n_caps} captions  ({f})")
    print(f"built in {root}")
