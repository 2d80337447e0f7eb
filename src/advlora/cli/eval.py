"""``advlora eval``: clean retrieval metrics of a model (and adapter) on a data set, written to a run folder;
with ``--attacks fgsm,pgd,apgd,square`` (and ``--eps 1/255,2/255,4/255``) robust retrieval as ``advlora attack``."""
from __future__ import annotations

import argparse

from advlora.cli.attack import LIST_HELP, add_threat_args, list_attacks, run_robust
from advlora.cli.common import add_model_data_args, add_out_arg, load_model_and_adapter
from advlora.io import write_json
from advlora.runs import default_out, run_folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_data_args(p)
    p.add_argument("--attacks", default=None,
                   help=f"comma list of registered attacks, e.g. fgsm,pgd,apgd,square (default: clean only); "
                        f"{LIST_HELP}")
    add_threat_args(p, eps_default="4/255")
    add_out_arg(p, "eval")


def run(args: argparse.Namespace) -> int:
    from advlora.data import load_dataset
    from advlora.evaluation import evaluate_clean
    from advlora.models.video import for_dataset
    from advlora.report.tables import metrics_table

    if getattr(args, "attacks", None) == "list":
        return list_attacks()
    if getattr(args, "attacks", None):
        return run_robust(args, [a.strip() for a in args.attacks.split(",") if a.strip()], command="eval")
    model = load_model_and_adapter(args)
    data = load_dataset(args.data, args.split, fmt=args.fmt, limit=args.limit, seed=args.seed,
                        image_root=args.image_root, frames=args.frames)
    model = for_dataset(model, data)  # videos: frame pooling (advlora.models.video)
    metrics = evaluate_clean(model, data, batch_size=args.batch_size, rerank_k=args.rerank_k)
    config = {k: v for k, v in vars(args).items() if k not in ("overrides",)}
    out = args.out or default_out("eval")
    with run_folder(out, config, seed=args.seed) as tmp:
        write_json(tmp / "metrics.json", {"clean": metrics, "n_images": len(data), "n_texts": len(data.captions)})
    print(f"{data.name}: {len(data)} {data.kind}s, {len(data.captions)} captions; model {args.model}")
    print(metrics_table({"clean": metrics}))
    print(f"run folder: {out}")
    return 0
