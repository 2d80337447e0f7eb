"""``advlora bench``: efficiency ratios measured side by side in one run, printed and written to bench.json."""
from __future__ import annotations

import argparse
from pathlib import Path

from advlora.cli.common import add_out_arg
from advlora.errors import AdvloraError
from advlora.io import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="vit-b32",
                   help="tiny | vit-b32 | blip-base | siglip-base, or any size a family declares (random weights "
                        "of that family, no download)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement (medians)")
    p.add_argument("--retrieval-images", type=int, default=5000)
    p.add_argument("--retrieval-texts", type=int, default=25000)
    p.add_argument("--device", default=None,
                   help="cuda, cuda:1, ...: the GPU figures (PGD-10 images/s, training-step MFU against the bf16 matmul "
                        "peak, ViT-B/32 and BLIP-base) instead of the CPU ratios; cpu runs that path on the CPU")
    p.add_argument("--device-sizes", default="vit-b32,blip-base", help="sizes of the --device figures")
    p.add_argument("--data", action="store_true", help="bench the streaming data path instead (CPU): memory and "
                   "time to the first step at 1k, 4k and 16k photo-sized images, decode throughput")
    p.add_argument("--data-sizes", default="1000,4000,16000", help="set sizes of --data (comma-separated)")
    p.add_argument("--data-steps", type=int, default=10, help="steps timed per throughput figure of --data")
    p.add_argument("--no-dist-eval", dest="dist_eval", action="store_false",
                   help="--data without its distributed-evaluation figure (advlora eval under torchrun with 2 "
                        "processes vs 1 process on the emoji test split, 64 images, --repeats rounds)")
    add_out_arg(p, "bench")


def run(args: argparse.Namespace) -> int:
    if args.device is not None:
        return _run_device(args)
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


def _run_device(args: argparse.Namespace) -> int:
    import torch

    from advlora.bench.device import format_device_bench, run_device_bench
    from advlora.runs import default_out, run_folder

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise AdvloraError(f"--device {args.device}: no CUDA device is visible to torch here")
    sizes = tuple(s for s in args.device_sizes.split(",") if s)
    result = run_device_bench(args.device, sizes=sizes, batch=args.batch, rank=args.rank, repeats=args.repeats)
    out = args.out or default_out("bench")
    with run_folder(out, {"device": args.device, "sizes": list(sizes), "batch": args.batch, "rank": args.rank}) as tmp:
        write_json(tmp / "bench_device.json", result)
    print(f"advlora bench --device {args.device} --batch {args.batch} (rank {args.rank}, medians of {args.repeats})")
    print(format_device_bench(result))
    print(f"bench_device.json: {out}/bench_device.json")
    return 0


def _run_data(args: argparse.Namespace) -> int:
    from advlora.bench.data_case import format_data_bench, run_data_bench  # torch: only once the command runs
    from advlora.bench.dist_eval import measure_distributed_eval
    from advlora.runs import default_out, run_folder

    try:
        sizes = tuple(int(x) for x in args.data_sizes.split(","))
    except ValueError:
        raise AdvloraError(f"--data-sizes must be comma-separated integers, got {args.data_sizes!r}") from None
    if len(sizes) < 2 or min(sizes) < 1 or args.data_steps < 1:
        raise AdvloraError("--data-sizes needs at least two sizes >= 1 and --data-steps >= 1")
    repeats = max(1, args.repeats)
    hook = (lambda: measure_distributed_eval(repeats=repeats)) if args.dist_eval else None
    result = run_data_bench(sizes, args.data_steps, repeats=repeats, eval_hook=hook)
    out = Path(args.out or default_out("bench-data"))
    with run_folder(out, {"sizes": list(sizes), "steps": args.data_steps, "repeats": args.repeats,
                          "dist_eval": args.dist_eval}) as tmp:
        write_json(tmp / "bench-data.json", result)
    print(f"advlora bench --data (sizes {', '.join(f'{n:,}' for n in result['sizes'])}; streaming, batch 32)")
    print(format_data_bench(result))
    print(f"bench-data.json: {out}/bench-data.json")
    return 0
