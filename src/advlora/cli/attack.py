"""``advlora attack``: one attack (at one or several eps) on a model (and adapter), robust retrieval in a run
folder. The helpers here also serve ``advlora eval --attacks ...``.

Attack names come from the registry (``advlora.attacks.registry``); ``--attack list`` prints it. The package
itself is imported inside ``run`` only, so that ``advlora --help`` does not load torch.
"""
from __future__ import annotations

import argparse

from advlora.cli.common import add_model_data_args, add_out_arg, load_model_and_adapter, model_loader
from advlora.errors import AdvloraError
from advlora.io import write_json
from advlora.runs import default_out, run_folder

DTYPES = ("float32", "float64", "bfloat16", "float16")
LIST_HELP = "'list' prints every registered attack with its kind and the threat-model fields it reads"


def add_threat_args(p: argparse.ArgumentParser, *, eps_default: str | None) -> None:
    """The threat-model flags, spelled the same by ``attack`` and ``eval``."""
    p.add_argument("--eps", default=eps_default,
                   help="radius in pixel space [0, 1]: 4/255, 0.0157, or a sweep 1/255,2/255,4/255")
    p.add_argument("--norm", default="linf", help="linf or l2 (default linf)")
    p.add_argument("--steps", type=int, default=10, help="iterations of PGD/APGD (FGSM: 1)")
    p.add_argument("--step-size", default=None, help="PGD step (default 2.5 * eps / steps)")
    p.add_argument("--restarts", type=int, default=1, help="random restarts; the per-sample worst is kept")
    p.add_argument("--no-random-start", dest="random_start", action="store_false",
                   help="start PGD/APGD at the clean image")
    p.add_argument("--square-queries", type=int, default=1000, help="Square's query budget per image")
    p.add_argument("--square-limit", type=int, default=None,
                   help="run the black-box attacks (Square) on a subset of N images")
    p.add_argument("--ensemble", action="store_true",
                   help="add the per-sample worst case over the image attacks (AutoAttack-style)")
    p.add_argument("--objective", default="contrastive",
                   help="image objective: contrastive (itc), margin, embedding; BLIP: itm, rerank")
    p.add_argument("--gallery", default="full", help="objective against the full caption gallery or the batch")
    p.add_argument("--surrogate", default=None, help="surrogate model of the transfer attack")
    p.add_argument("--text-budget", type=int, default=3, help="character edits per caption (text, joint)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="precision of evaluation and attacks (default float32; written in every threat-model line)")
    p.add_argument("--no-sanity", dest="sanity", action="store_false", help="skip the sanity checks")
    p.add_argument("--sanity-limit", type=int, default=64, help="images for the costly sanity checks")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_data_args(p)
    p.add_argument("--attack", default="pgd",
                   help=f"a registered attack (default pgd); {LIST_HELP}")
    add_threat_args(p, eps_default="4/255")
    add_out_arg(p, "attack")


def run(args: argparse.Namespace) -> int:
    if args.attack == "list":
        return list_attacks()
    return run_robust(args, [args.attack], command="attack")


def list_attacks() -> int:
    """Print the attack registry: name, kind, the ThreatModel fields read, options and fixed objective."""
    from advlora.attacks import registry

    for s in registry.specs():
        extra = "".join([f"; options {s.options}" if s.options else "",
                         f"; objective {s.objective}" if s.objective else ""])
        print(f"{s.name:12s} {s.kind:10s} reads {', '.join(s.uses) or '-'}{extra}")
    return 0


def run_robust(args: argparse.Namespace, attacks: list[str], *, command: str) -> int:
    """Evaluate ``attacks`` at every eps of ``--eps``; write metrics.json/config.yaml/manifest.json; print."""
    import torch

    from advlora.attacks import ThreatModel, format_eps, parse_eps_list, registry, result_key
    from advlora.data import load_dataset
    from advlora.evaluation.robust import evaluate_robust
    from advlora.evaluation.sanity import check_monotone, verdict

    registry.check_names(attacks)
    eps_list = parse_eps_list(args.eps)
    threats = [ThreatModel(norm=args.norm, eps=e, step_size=args.step_size, steps=args.steps,
                           restarts=args.restarts, random_start=args.random_start, seed=args.seed)
               for e in eps_list]
    if args.square_limit is not None and args.square_limit < 1:
        raise AdvloraError(f"--square-limit must be >= 1, got {args.square_limit}")
    if args.square_queries < 1:
        raise AdvloraError(f"--square-queries must be >= 1, got {args.square_queries}")
    dtype = getattr(torch, getattr(args, "dtype", "float32"))
    model = load_model_and_adapter(args).to(dtype)   # whatever precision the checkpoint was stored in
    surrogate = None
    if args.surrogate:
        surrogate = model_loader()(args.surrogate, device=str(model.device)).to(dtype)
    extra = {k: getattr(args, k) for k in ("image_root", "frames") if getattr(args, k, None) is not None}
    data = load_dataset(args.data, args.split, fmt=args.fmt, limit=args.limit, seed=args.seed, **extra)
    results = []
    for th in threats:
        res = evaluate_robust(model, data, attacks, th, rerank_k=args.rerank_k,
                              batch_size=min(args.batch_size, 64), square_limit=args.square_limit,
                              square_queries=args.square_queries, ensemble=args.ensemble,
                              generator=torch.Generator().manual_seed(args.seed), objective=args.objective,
                              gallery=args.gallery, surrogate=surrogate, text_budget=args.text_budget,
                              sanity=args.sanity, sanity_limit=args.sanity_limit)
        results.append(res)
    robust, sanity = {}, []
    for res in results:
        for name, entry in res["attacks"].items():
            robust[result_key(name, res["eps_str"])] = entry
        if "ensemble" in res:
            robust[result_key("ensemble", res["eps_str"])] = res["ensemble"]
        tagged = [c.prefixed(f"[eps {res['eps_str']}] ") for c in res.get("sanity", [])]
        sanity += [c for c in tagged if c not in sanity]
    if args.sanity and len(results) > 1:
        for name in results[0]["attacks"]:
            spec = registry.find(results[0]["attacks"][name].attack)
            if spec is not None and spec.perturbs_images:
                sanity.append(check_monotone([(r["eps"], r["attacks"][name]["metrics"]["r_mean"]) for r in results],
                                             name))
    metrics = {"clean": results[0]["clean"], "n_images": len(data), "n_texts": len(data.captions),
               "data": data.name, "model": args.model, "adapter": args.adapter,
               "robust": robust, "sanity": sanity, "verdict": verdict(sanity) if sanity else None,
               "protocol": results[0]["protocol"],
               "runs": [{k: v for k, v in r.items() if k not in ("protocol",)} for r in results]}
    config = {k: v for k, v in vars(args).items() if k not in ("overrides",)}
    config["threat_models"] = [{"norm": t.norm, "eps": format_eps(float(t.eps)), "steps": t.steps,
                                "step_size": t.step, "restarts": t.restarts, "random_start": t.random_start,
                                "seed": t.seed} for t in threats]
    out = args.out or default_out(command)
    with run_folder(out, config, seed=args.seed) as tmp:
        write_json(tmp / "metrics.json", metrics)
    print(f"{data.name}: {len(data)} {data.kind}s, {len(data.captions)} captions; model {args.model}"
          + (f" + adapter {args.adapter}" if args.adapter else ""))
    print(robust_table(metrics))
    print(f"sanity verdict: {verdict(sanity)}" if sanity else "sanity checks: skipped (--no-sanity)")
    if sanity:
        print("sanity checks:")
        print("\n".join(f"  {c}" for c in sanity))
    print(f"run folder: {out}")
    return 0


def robust_table(metrics: dict) -> str:
    """Clean and robust rows with attack success rates and the threat model beside every row."""
    from advlora.metrics import METRIC_KEYS
    from advlora.report.tables import metrics_table

    rows = {"clean": {**metrics["clean"], "threat": "none (clean)"}}
    for key, e in metrics["robust"].items():
        label = key + (" [subset]" if "subset" in e else "")
        rows[label] = {**e["metrics"], "asr_i2t": e["asr"]["i2t"], "asr_t2i": e["asr"]["t2i"],
                       "threat": e["threat"] + (f"; {e['subset']}, clean r_mean there {e['clean']['r_mean']:.1f}"
                                               if "subset" in e else "")}
    table = metrics_table(rows, columns=[*METRIC_KEYS, "asr_i2t", "asr_t2i"])
    lines = table.splitlines()
    width = max(len(s) for s in lines)
    threats = ["threat model", *[r["threat"] for r in rows.values()]]
    return "\n".join(f"{ln.ljust(width)}  {t}" for ln, t in zip(lines, threats))
