"""``advlora adapter``: inspect (info), initialise and save (init), or merge adapters.

- ``advlora adapter info --model M --method advlora --rank 8 [--towers both] [--targets q_proj v_proj]``: trainable
  parameter counts and share, and AdvLoRA's per-layer alignment errors. ``--method all`` compares every method;
  ``--random-model clip:vit-b32`` inspects a random model of a named size (no download). ``--adapter DIR``
  inspects a trained adapter instead: an adapter folder or a training run folder (its ``adapter/``), on the
  run's model unless ``--model`` / ``--random-model`` names another.
- ``advlora adapter init --model M --method advlora --out DIR``: attach a fresh adapter and save it (peft format).
- ``advlora adapter merge --model M --adapter DIR --out DIR``: fold the adapter into the weights and save the model.
- ``advlora adapter card DIR --results RUN...``: write DIR/README.md, a Hugging Face model card whose
  ``model-index`` holds the results files of the evaluations run on the adapter (never over a README.md that
  advlora did not write).
"""
from __future__ import annotations

import argparse
import contextlib

from advlora.adapters import method as adapter_methods
from advlora.adapters.config import ALIGN_INITS, ALPHA_MODES, KMEANS_ON, MODES, TOWERS
from advlora.cli.common import add_parser, add_random_model_argument, examples, parse_random_model
from advlora.runs import check_out, mark_once, replacing

EXAMPLES = examples(
    "advlora adapter info --random-model clip:vit-b32 --method all --rank 8",
    "advlora adapter init --model tiny-clip --method advlora --rank 8 --out runs/adapter",
    "advlora adapter merge --model tiny-clip --adapter runs/a/adapter --out runs/merged",
    "advlora adapter card runs/a/adapter --results runs/eval-a")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = add_parser(sub, "info", "trainable parameters and alignment errors of a method on a model",
                      example=examples("advlora adapter info --random-model clip:vit-b32 --method all --rank 8",
                                       "advlora adapter info --model tiny-clip --method advlora --layers",
                                       "advlora adapter info --adapter runs/a      # a training run's adapter"))
    _model_args(info, model_default=None)
    _method_args(info, allow_all=True)
    info.add_argument("--adapter", default=None, metavar="DIR",
                      help="inspect a trained adapter: an adapter folder, or a training run folder (its adapter/; "
                           "the model is the run's unless --model or --random-model is given; default: none, a "
                           "fresh adapter of --method)")
    info.add_argument("--layers", action="store_true", help="print every adapted layer's alignment error")
    init = add_parser(sub, "init", "attach a freshly initialised adapter and save it",
                      example=examples("advlora adapter init --model tiny-clip --method advlora --rank 8 "
                                       "--out runs/adapter"))
    _model_args(init)
    _method_args(init)
    init.add_argument("--out", required=True, help="adapter folder to write (an existing one: see --overwrite)")
    init.add_argument("--overwrite", action="store_true",
                      help="replace an existing --out that advlora created (never a folder it did not create)")
    merge = add_parser(sub, "merge", "fold an adapter into the weights and save the merged model",
                       example=examples("advlora adapter merge --model tiny-clip --adapter runs/a/adapter "
                                        "--out runs/merged"))
    _model_args(merge)
    merge.add_argument("--adapter", required=True, help="adapter folder")
    merge.add_argument("--out", required=True, help="model folder to write (loadable with --model; an existing "
                       "one: see --overwrite)")
    merge.add_argument("--overwrite", action="store_true",
                       help="replace an existing --out that advlora created (never a folder it did not create)")
    card = add_parser(sub, "card", "write the adapter folder's README.md model card from its evaluations' results",
                      example=examples("advlora adapter card runs/a/adapter --results runs/eval-a runs/eval-b"))
    card.add_argument("adapter", metavar="DIR", help="adapter folder")
    card.add_argument("--results", nargs="+", required=True, metavar="RUN",
                      help="run folders or results files of evaluations of this adapter (searched recursively)")
    card.add_argument("--out", default=None, help="card file to write (default: DIR/README.md)")


def _model_args(p: argparse.ArgumentParser, model_default: str | None = "tiny-clip") -> None:
    p.add_argument("--model", default=model_default,
                   help="hub id, local folder, tiny-clip, tiny-blip or tiny-siglip (default: tiny-clip)")
    add_random_model_argument(p)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")


def _method_args(p: argparse.ArgumentParser, allow_all: bool = False) -> None:
    p.add_argument("--method", default="advlora",
                   help=f"{' | '.join(adapter_methods.choices())}{' | all' if allow_all else ''} "
                        f"(advlora list methods)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (advlora: also the k-means clusters)")
    p.add_argument("--towers", default="both", help=" | ".join(TOWERS))
    p.add_argument("--targets", nargs="+", default=None,
                   help="module names, suffixes or regular expressions (prefix vision: / text: for one tower; "
                        "default: the backend's attention projections)")
    inits = "; ".join(f"{m.name}: {' | '.join(m.inits)}" for m in map(adapter_methods.get, adapter_methods.names())
                      if m.inits)
    p.add_argument("--init", default=None, help=f"the method's initialisation (default: its first) - {inits}")
    p.add_argument("--mode", default="residual", help="advlora's start: " + " | ".join(MODES))
    p.add_argument("--alpha-mode", default="layer", help="advlora's alpha: " + " | ".join(ALPHA_MODES))
    p.add_argument("--alpha-init", type=float, default=None,
                   help="advlora's alpha0 (default: 1.0 in residual mode, 0.0 in zero_alpha mode)")
    p.add_argument("--align-init", default="lstsq", help=" | ".join(ALIGN_INITS))
    p.add_argument("--kmeans-iters", type=int, default=20, help="Lloyd iterations after k-means++ seeding")
    p.add_argument("--kmeans-on", default="rows", help=" | ".join(KMEANS_ON))
    p.add_argument("--lora-alpha", type=float, default=None, help="peft lora_alpha for lora/pissa (default: rank)")
    p.add_argument("--rslora", action="store_true", help="rank-stabilised scaling lora_alpha / sqrt(r) (lora)")
    p.add_argument("--n-tokens", type=int, default=None,
                   help="vision prompt tokens per prompted layer (vpt: 4, visual-prompt: 5 by default)")
    p.add_argument("--depth", type=int, default=None, help="vpt: layers that get new tokens (1: shallow, the default)")
    p.add_argument("--prompt-size", type=int, default=None,
                   help="visual-prompt's frame width in pixels (default: TeCoA's 30 at 224 px, scaled to the model)")
    p.add_argument("--trainable-alpha", action="store_true",
                   help="AdvLoRA's trainable alpha on the branch, shared per --alpha-mode (dora)")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means++, of peft's random A and of the prompts")


def _options(args: argparse.Namespace, method: str) -> dict:
    """The config of ``method`` from the flags: the fields its declaration reads (``AdapterMethod.reads``)."""
    flags = {"rank": args.rank, "towers": args.towers, "targets": args.targets, "seed": args.seed,
             "lora_alpha": args.lora_alpha, "use_rslora": args.rslora, "init": args.init, "mode": args.mode,
             "alpha_mode": args.alpha_mode, "alpha_init": args.alpha_init, "align_init": args.align_init,
             "kmeans_iters": args.kmeans_iters, "kmeans_on": args.kmeans_on, "n_tokens": args.n_tokens,
             "depth": args.depth, "prompt_size": args.prompt_size, "trainable_alpha": args.trainable_alpha}
    reads = adapter_methods.get(method).reads
    return {"method": method, **{k: v for k, v in flags.items() if k in reads}}


def _load(args: argparse.Namespace):
    from advlora.runtime import resolve_device

    if args.random_model:
        from advlora.models.tiny import random_model

        return random_model(*parse_random_model(args.random_model)).to(resolve_device(args.device))
    from advlora.cli.common import model_loader

    return model_loader()(args.model, device=resolve_device(args.device))


def run(args: argparse.Namespace) -> int:
    return {"info": _info, "init": _init, "merge": _merge, "card": _card}[args.action](args)


def _info(args: argparse.Namespace) -> int:
    import copy

    from advlora.adapters import adapter_info, attach_adapter
    from advlora.errors import choices_error

    if args.adapter:
        return _info_trained(args)
    args.model = args.model or "tiny-clip"
    methods = list(adapter_methods.choices()) if args.method == "all" else [args.method]
    if any(m not in adapter_methods.choices() for m in methods):
        raise choices_error("adapter method", args.method, (*adapter_methods.choices(), "all"))
    base = _load(args)
    name = args.random_model and f"random {args.random_model}" or args.model
    print(f"model {name}: rank {args.rank}, towers {args.towers}, targets {args.targets or 'backend defaults'}")
    width = max(len("method"), *map(len, methods))
    print(f"{'method':<{width}} {'layers':>6} {'trainable':>12} {'total':>12} {'share %':>9}")
    reports = []
    for method in methods:
        model = base if len(methods) == 1 else copy.deepcopy(base)
        attach_adapter(model, _options(args, method))
        info = adapter_info(model)
        print(f"{method:<{width}} {info['layers']:>6} {info['trainable']:>12,} {info['total']:>12,} "
              f"{info['share']:>9.3f}")
        rep = [r for r in model.advlora_adapter.report if "error" in r]  # the layers whose init reports an error
        if rep:
            reports.append((method, model.advlora_adapter.config.init, rep))
        del model
    for method, init, rep in reports:
        errs = [r["error"] for r in rep]
        print(f"{method} alignment error ||W0 - BA|| / ||W0|| over {len(rep)} layers: "
              f"mean {sum(errs) / len(errs):.4f}, min {min(errs):.4f}, max {max(errs):.4f} (init {init})")
        if args.layers:
            print(f"{'layer':<60} {'shape':>11} {'error':>8} {'one-hot':>8}")
            for r in rep:
                oh = "" if r.get("onehot_error") is None else f"{r['onehot_error']:.4f}"
                print(f"{r['layer']:<60} {'x'.join(map(str, r['shape'])):>11} {r['error']:>8.4f} {oh:>8}")
    return 0


def _info_trained(args: argparse.Namespace) -> int:
    """``adapter info --adapter DIR``: what a trained adapter is (method, rank, layers, parameters) on its model."""
    from pathlib import Path

    from advlora.adapters import INFO_KEYS, adapter_info, alpha_values, load_adapter
    from advlora.config import load_yaml
    from advlora.errors import AdvloraError

    folder = Path(args.adapter)
    run = folder if (folder / "adapter").is_dir() else folder.parent
    if (folder / "adapter").is_dir():
        folder = folder / "adapter"
    if not folder.is_dir():
        raise AdvloraError(f"--adapter {args.adapter}: no such folder")
    config = load_yaml(run / "config.yaml").get("model", {}) if (run / "config.yaml").is_file() else {}
    if not args.model and not args.random_model:
        args.random_model, args.model = config.get("random"), config.get("name") or "tiny-clip"
    base = _load(args)
    load_adapter(base, folder)
    info = adapter_info(base)
    name = args.random_model and f"random {args.random_model}" or args.model
    print(f"adapter {folder} on model {name}")
    fields = "".join(f", {k} {v}" for k, v in info.items() if k not in INFO_KEYS)   # those its method reads
    print(f"method {info['method']}{fields}, {info['layers']} adapted layers; {info['trainable']:,} trainable of "
          f"{info['total']:,} parameters ({info['share']:.3f}%)")
    alphas = alpha_values(base)
    if alphas:
        vals = list(alphas.values())
        print(f"alpha over {len(vals)} layers: mean {sum(vals) / len(vals):.4f}, min {min(vals):.4f}, "
              f"max {max(vals):.4f}")
    return 0


def _init(args: argparse.Namespace) -> int:
    from advlora.adapters import adapter_info, attach_adapter, save_adapter

    check_out(args.out, overwrite=args.overwrite)
    model = _load(args)
    attach_adapter(model, _options(args, args.method))
    save_adapter(model, args.out)
    mark_once(args.out, "adapter init")
    info = adapter_info(model)
    print(f"{args.method}: {info['trainable']:,} trainable parameters ({info['share']:.3f}%); adapter written to "
          f"{args.out}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from advlora.adapters import load_adapter, merge_adapter
    from advlora.models import save_model

    check_out(args.out, overwrite=args.overwrite)
    model = _load(args)
    load_adapter(model, args.adapter)
    merge_adapter(model)
    with replacing(args.out, lambda folder: False) if args.overwrite else contextlib.nullcontext():
        save_model(model, args.out)          # save_pretrained writes into a folder: the old one is moved aside
    mark_once(args.out, "adapter merge")
    print(f"merged {args.adapter} into {args.random_model or args.model}; model written to {args.out}")
    return 0


def _card(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from advlora.errors import AdvloraError
    from advlora.experiments.card import results_of, write_card
    from advlora.experiments.results import find_records

    if not Path(args.adapter).is_dir():
        raise AdvloraError(f"{args.adapter}: adapter folder not found")
    found, notes = find_records(args.results)
    for n in notes:
        print(f"advlora adapter card: {n}", file=sys.stderr)
    results = results_of(args.adapter, [rec for _, rec in found])
    if not results:
        raise AdvloraError(f"none of the {len(found)} results files under {', '.join(args.results)} evaluated "
                           f"the adapter {args.adapter}")
    target = write_card(args.adapter, results, args.out)
    print(f"model card with {len(results)} results ({len(found) - len(results)} of other models left out) "
          f"written to {target}")
    return 0
