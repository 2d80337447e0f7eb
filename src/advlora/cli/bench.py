"""``advlora bench``: efficiency ratios measured side by side in one run, printed and written to bench.json."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from advlora.cli.common import add_deprecated, add_out_arg, examples, parse_random_model
from advlora.errors import AdvloraError
from advlora.io import write_json

EXAMPLES = examples(
    "advlora bench --random-model clip:vit-b32 --batch-size 16       # the CPU efficiency ratios",
    "advlora bench --device cuda --device-models clip:vit-b32,blip:blip-base --batch-size 64   # GPU figures",
    "advlora bench --data                                             # the streaming data path",
    "advlora bench --methods --random-model clip:vit-b32             # every adapter method's step, memory, size")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--random-model", default="clip:vit-b32", metavar="ARCH:SIZE",
                   help="the random model measured (no download): clip:test, clip:tiny, clip:vit-b32, "
                        "clip:openclip-vit-b32 (open_clip format, converted), blip:blip-base, siglip:siglip-base, "
                        "or any size a family declares")
    add_deprecated(p, "--size", dest="random_model", new="--random-model")
    p.add_argument("--batch-size", type=int, default=16, help="images per measured batch")
    add_deprecated(p, "--batch", dest="batch_size", new="--batch-size", type=int)
    p.add_argument("--rank", type=int, default=8, help="adapter rank")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement (medians)")
    p.add_argument("--retrieval-images", type=int, default=5000, help="gallery images of the retrieval timing")
    p.add_argument("--retrieval-texts", type=int, default=25000, help="captions of the retrieval timing")
    p.add_argument("--suite-images", type=int, default=8,
                   help="images of the suite figure (P7: the standard suite vs its members alone); 0 skips it")
    p.add_argument("--autoattack-images", type=int, default=100,
                   help="test images per row of the AutoAttack reduction (P8, tiny CLIP, only when torchattacks is "
                        "importable: an optional extra); 0 skips it")
    p.add_argument("--device", default=None,
                   help="cuda, cuda:1, ...: the GPU figures (PGD-10 images/s, training-step MFU against the bf16 "
                        "matmul peak, ViT-B/32 and BLIP-base) instead of the CPU ratios; cpu runs that path on the "
                        "CPU (default: the CPU ratios)")
    p.add_argument("--device-models", default="clip:vit-b32,blip:blip-base", metavar="ARCH:SIZE,...",
                   help="random models of the --device figures")
    add_deprecated(p, "--device-sizes", dest="device_models", new="--device-models")
    p.add_argument("--data", action="store_true", help="bench the streaming data path instead (CPU): memory and "
                   "time to the first step at 1k, 4k and 16k photo-sized images, decode throughput")
    p.add_argument("--methods", action="store_true",
                   help="bench every declared adapter method instead (and its aliases, e.g. pissa): trainable "
                        "parameters, adversarial training step time against LoRA's (one process, interleaved, "
                        "medians of --repeats) and peak memory against full fine-tuning's (a fresh process per "
                        "method); written to bench.json under \"methods\"")
    p.add_argument("--classes", type=int, default=0, metavar="C",
                   help="--methods: time the step of the class-prompt classifier over C class names (a class "
                        "folder, as few-shot training runs it; prompt methods re-encode their class prompts) "
                        "instead of the batch's captions (default 0: captions)")
    p.add_argument("--data-sizes", default="1000,4000,16000", help="set sizes of --data (comma-separated)")
    p.add_argument("--data-steps", type=int, default=10, help="steps timed per throughput figure of --data")
    p.add_argument("--no-dist-eval", dest="dist_eval", action="store_false",
                   help="--data without its distributed-evaluation figure (advlora eval under torchrun with 2 "
                        "processes vs 1 process on the emoji test split, 64 images, --repeats rounds)")
    add_out_arg(p, "bench")


def run(args: argparse.Namespace) -> int:
    modes = [flag for flag, on in (("--device", args.device is not None), ("--data", args.data),
                                   ("--methods", args.methods)) if on]
    if len(modes) > 1:
        raise AdvloraError(f"{' and '.join(modes)}: choose one bench mode")
    if args.device is not None:
        return _run_device(args)
    if args.data:
        return _run_data(args)
    if args.methods:
        return _run_methods(args)
    from advlora.bench import BenchConfig, format_bench, run_bench, write_bench
    from advlora.runs import check_out, default_out, execution, run_folder

    cfg = BenchConfig(size=bench_size(args.random_model), batch=args.batch_size, rank=args.rank,
                      repeats=args.repeats, retrieval_images=args.retrieval_images,
                      retrieval_texts=args.retrieval_texts, suite_images=args.suite_images,
                      autoattack_images=args.autoattack_images)
    out = args.out or default_out("bench")
    check_out(out, overwrite=args.overwrite)
    measured: dict = {}
    try:
        result = run_bench(cfg, measured)
    except BaseException:
        keep_partial(out, cfg, measured)
        raise
    with run_folder(out, cfg, execution=execution(device="cpu", dtype="float32"), command="bench") as tmp:
        write_bench(result, tmp)
    print(f"advlora bench --random-model {args.random_model} --batch-size {cfg.batch} (rank {cfg.rank}, medians of "
          f"{cfg.repeats})")
    print(format_bench(result))
    print(f"bench.json: {out}/bench.json")
    return 0


def check_counts(args: argparse.Namespace, *names: str) -> None:
    """Each of ``names`` (--batch-size, --rank, --repeats) a whole number >= 1, before any work."""
    for name in names:
        if getattr(args, name) < 1:
            raise AdvloraError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def keep_partial(out, config, measured: dict) -> None:
    """What a bench that failed late had measured: written to ``bench-partial.json`` in its run folder and
    printed on stderr, one figure a line."""
    from advlora.runs import execution, run_folder

    if not measured:
        return
    with run_folder(out, config, execution=execution(device="cpu", dtype="float32"), command="bench") as tmp:
        write_json(tmp / "bench-partial.json", measured)
    print(f"advlora bench: stopped after {len(measured)} measurements, kept in {out}/bench-partial.json:",
          file=sys.stderr)
    for k, v in measured.items():
        if isinstance(v, (int, float)):
            print(f"  {k} = {v:.4g}", file=sys.stderr)


def bench_size(text: str) -> str:
    """The bench's size of ``--random-model ARCH:SIZE`` (or a bare size, the old ``--size``): the bench builds the
    family that declares the size (``advlora.models.family``; the open_clip-format sizes are CLIPs)."""
    from advlora.bench.open_clip_size import OPEN_CLIP_FAMILY, OPEN_CLIP_SIZES
    from advlora.models.family import family_of_size

    if ":" not in text:
        return text
    arch, size = parse_random_model(text)
    declared = OPEN_CLIP_FAMILY if size in OPEN_CLIP_SIZES else family_of_size(size).name
    if arch != declared:
        raise AdvloraError(f"--random-model {text}: the bench measures {declared}:{size} for size {size} "
                           f"(a size names one family: advlora list models)")
    return size


def _run_device(args: argparse.Namespace) -> int:
    import torch

    from advlora.bench.device import format_device_bench, run_device_bench
    from advlora.runs import check_out, default_out, execution, run_folder

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise AdvloraError(f"--device {args.device}: no CUDA device is visible to torch here")
    sizes = tuple(bench_size(s) for s in args.device_models.split(",") if s)
    if not sizes:
        raise AdvloraError("--device-models names no model")
    check_counts(args, "batch_size", "rank", "repeats")
    out = args.out or default_out("bench")
    check_out(out, overwrite=args.overwrite)
    result = run_device_bench(args.device, sizes=sizes, batch=args.batch_size, rank=args.rank, repeats=args.repeats)
    with run_folder(out, {"device": args.device, "sizes": list(sizes), "batch": args.batch_size, "rank": args.rank},
                    execution=execution(device=args.device), command="bench") as tmp:
        write_json(tmp / "bench_device.json", result)
    print(f"advlora bench --device {args.device} --batch-size {args.batch_size} (rank {args.rank}, medians of "
          f"{args.repeats})")
    print(format_device_bench(result))
    print(f"bench_device.json: {out}/bench_device.json")
    return 0


def _run_methods(args: argparse.Namespace) -> int:
    from advlora.bench.methods_case import MethodsConfig, format_methods, measure_methods
    from advlora.runs import check_out, default_out, execution, run_folder

    size = bench_size(args.random_model)
    check_counts(args, "batch_size", "rank", "repeats")
    out = Path(args.out or default_out("bench"))
    check_out(out, overwrite=args.overwrite)
    if args.classes < 0:
        raise AdvloraError(f"--classes must be >= 0, got {args.classes}")
    cfg = MethodsConfig(size=size, batch=args.batch_size, rank=args.rank, repeats=args.repeats, classes=args.classes)
    result = measure_methods(cfg)
    with run_folder(out, cfg, execution=execution(device="cpu", dtype="float32"), command="bench") as tmp:
        write_json(tmp / "bench.json", {"methods": result})
    task = f", the class-prompt classifier over {cfg.classes} classes" if cfg.classes else ""
    print(f"advlora bench --methods --random-model {args.random_model} --batch-size {cfg.batch} (rank {cfg.rank}, "
          f"medians of {cfg.repeats}{task})")
    print(format_methods(result))
    print(f"bench.json: {out}/bench.json")
    return 0


def _run_data(args: argparse.Namespace) -> int:
    from advlora.bench.data_case import format_data_bench, run_data_bench  # torch: only once the command runs
    from advlora.bench.dist_eval import measure_distributed_eval
    from advlora.runs import check_out, default_out, run_folder

    try:
        sizes = tuple(int(x) for x in args.data_sizes.split(","))
    except ValueError:
        raise AdvloraError(f"--data-sizes must be comma-separated integers, got {args.data_sizes!r}") from None
    if len(sizes) < 2 or min(sizes) < 1 or args.data_steps < 1:
        raise AdvloraError("--data-sizes needs at least two sizes >= 1 and --data-steps >= 1")
    check_counts(args, "repeats")
    out = Path(args.out or default_out("bench-data"))
    check_out(out, overwrite=args.overwrite)
    repeats = args.repeats
    hook = (lambda: measure_distributed_eval(repeats=repeats)) if args.dist_eval else None
    result = run_data_bench(sizes, args.data_steps, repeats=repeats, eval_hook=hook)
    with run_folder(out, {"sizes": list(sizes), "steps": args.data_steps, "repeats": args.repeats,
                          "dist_eval": args.dist_eval}, command="bench") as tmp:
        write_json(tmp / "bench-data.json", result)
    print(f"advlora bench --data (sizes {', '.join(f'{n:,}' for n in result['sizes'])}; streaming, batch 32)")
    print(format_data_bench(result))
    print(f"bench-data.json: {out}/bench-data.json")
    return 0
