"""``advlora bench``: efficiency ratios measured side by side in one run, printed and written to bench.json."""
from __future__ import annotations

import argparse

from advlora.cli.common import add_out_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="vit-b32", help="tiny | vit-b32 | blip-base (random weights, no download)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement (medians)")
    p.add_argument("--retrieval-images", type=int, default=5000)
    p.add_argument("--retrieval-texts", type=int, default=25000)
    add_out_arg(p, "bench")


def run(args: argparse.Namespace) -> int:
    from advlora.bench import BenchConfig, format_bench, run_bench, write_bench
    from advlora.runs import default_out, run_folder

    cfg = BenchConfig(size=args.size, batch=args.batch, rank=args.rank, repeats=args.repeats,
                      retrieval_images=args.retrieval_images, retrieval_texts=args.retrieval_texts)
    result = run_bench(cfg)
    out = args.out or default_out("bench")
    with run_folder(out, cfg) as tmp:
        write_bench(result, tmp)
    print(f"advlora bench --size {cfg.size} --batch {cfg.batch} (rank {cfg.rank}, medians of {cfg.repeats})")
    print(format_bench(result))
    print(f"bench.json: {out}/bench.json")
    return 0
