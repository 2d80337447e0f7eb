"""``advlora bench``: efficiency ratios measured side by side in one run, printed and written to bench.json."""
from __future__ import annotations

import argparse
from pathlib import Path

from advlora.cli.common import add_out_arg
from advlora.errors import AdvloraError
from advlora.io import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="vit-b32", help="tiny | vit-b32 | blip-base (random weights, no download)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement (medians)")
    p.add_argument("--retrieval-images", type=int, default=5000)
    p.add_argument("--retrieval-texts", type=int, default=25000)
    p.add_argument("--data", action="store_true", help="bench the streaming data path instead (CPU): memory and "
                   "time to the first step at 1k, 4k and 16k photo-sized images, decode throughput")
    p.add_argument("--data-sizes", default="1000,4000,16000", help="set sizes of --data (comma-separated)")
    p.add_argument("--data-steps", type=int, default=10, help="steps timed per throughput figure of --data")
    add_out_arg(p, "bench")


def run(args: argparse.Namespace) -> int:
    if args.data:
        return _run_data(args)
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


def _run_data(args: argparse.Namespace) -> int:
    from advlora.bench.data_case import format_data_bench, run_data_bench  # torch: only once the command runs
    from advlora.runs import default_out

    try:
        sizes = tuple(int(x) for x in args.data_sizes.split(","))
    except ValueError:
        raise AdvloraError(f"--data-sizes must be comma-separated integers, got {args.data_sizes!r}") from None
    if len(sizes) < 2 or min(sizes) < 1 or args.data_steps < 1:
        raise AdvloraError("--data-sizes needs at least two sizes >= 1 and --data-steps >= 1")
    result = run_data_bench(sizes, args.data_steps, repeats=max(1, args.repeats))
    out = Path(args.out or default_out("bench-data"))
    write_json(out / "bench-data.json", result)
    print(f"advlora bench --data (sizes {', '.join(f'{n:,}' for n in result['sizes'])}; streaming, batch 32)")
    print(format_data_bench(result))
    print(f"bench-data.json: {out}/bench-data.json")
    return 0
