"""``advlora attack``: one attack (at one or several eps) on a model (and adapter), robust retrieval in a run
folder. The helpers here also serve ``advlora eval --attacks ...``.

Attack names come from the registry (``advlora.attacks.registry``); ``advlora list attacks`` (or ``--attack
list``) prints it. The package itself is imported inside ``run`` only, so that ``advlora --help`` does not load
torch. ``--attack-steps`` is the attack's iterations (``--steps`` is a hidden alias of it); the
evaluation radius defaults to 4/255, twice the training default of ``advlora train`` (2/255).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from advlora.cli.common import (
    add_deprecated,
    add_dtype_argument,
    add_json_argument,
    add_model_data_args,
    add_out_arg,
    examples,
    load_model_and_adapter,
    model_loader,
    print_json_file,
    summary_stream,
)
from advlora.errors import AdvloraError, choices_error
from advlora.io import write_json
from advlora.runs import check_out, default_out, execution, run_folder

LIST_HELP = "'list' prints every registered attack (as advlora list attacks)"
#: the ``EvalPlan`` fields a ``--plan`` YAML file may set beside ``attack_options`` (each a flag of its own)
PLAN_KEYS = ("objective", "gallery", "exhaustive", "exit_k", "square_limit", "square_queries", "text_budget",
             "ensemble", "sanity_limit")
EXAMPLES = examples(
    "advlora attack --model tiny-clip --data emoji --attack pgd --eps 4/255 --attack-steps 10",
    "advlora attack --model runs/merged --data coco/dataset_coco.json --image-root coco --attack apgd "
    "--eps 1/255,2/255,4/255 --json > metrics.json",
    "advlora attack --model tiny-clip --data emoji-cls --protocol tecoa   # TeCoA's PGD-100 at 1/255",
    "advlora list attacks")


def add_protocol_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", default=None, metavar="NAME|FILE.yaml",
                   help="a published evaluation protocol: sets its attacks, iterations, step, eps, norm and samples "
                        "(advlora list protocols), or a YAML file with the same fields; a flag given as well "
                        "overrides the preset's value, with a note, and the results record it (default: none, "
                        "recorded as 'custom')")


def apply_protocol(args: argparse.Namespace, add_arguments: Callable[[argparse.ArgumentParser], None], *,
                   attacks: tuple[str, str] = ("attacks", "--attacks")) -> None:
    """Set the flags of ``--protocol``'s preset (``advlora.evaluation.protocols.KNOBS``; its attacks go to
    ``attacks``, the command's (dest, flag)) on ``args`` and record it as ``args.protocol_record``. A flag the
    user gave with a value other than its default (``add_arguments``: the command's parser) and the preset's
    overrides the preset: one note on stderr, and the results record it under the protocol's ``overrides``. An
    unknown preset or a bad file is one line (exit 2) before any work."""
    from advlora.evaluation.protocols import KNOBS, load_protocol, record

    spec = getattr(args, "protocol", None)
    if not spec:
        args.protocol_record = record(None)
        return
    protocol = load_protocol(spec)
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    knobs = {**KNOBS, "attacks": attacks}
    overrides = {}
    for field, (dest, flag) in knobs.items():
        value = protocol.values().get(KNOBS[field][0])
        if value is None:
            continue
        given = getattr(args, dest, None)
        if given != defaults.get(dest) and given != value:
            overrides[flag] = given
            print(f"--protocol {protocol.name}: {flag} {given} overrides the preset's {value} "
                  f"(recorded in the results as an override)", file=sys.stderr)
        else:
            setattr(args, dest, value)
    args.protocol = protocol.name
    args.protocol_record = record(protocol, overrides)


def add_threat_args(p: argparse.ArgumentParser, *, eps_default: str | None) -> None:
    """The threat-model flags, spelled the same by ``attack`` and ``eval``."""
    p.add_argument("--eps", default=eps_default,
                   help=f"radius in pixel space [0, 1]: 4/255, 0.0157, or a sweep 1/255,2/255,4/255 (default: "
                        f"{eps_default}; advlora train's training radius defaults to 2/255)")
    p.add_argument("--norm", default="linf", help="linf or l2 (l2 radii are larger: e.g. --eps 0.5; every attack, "
                   "the standard suite included, runs under both)")
    p.add_argument("--attack-steps", dest="steps", type=int, default=10, metavar="N",
                   help="iterations of the iterative attacks, PGD/APGD (FGSM: 1)")
    add_deprecated(p, "--steps", dest="steps", new="--attack-steps", type=int)
    p.add_argument("--step-size", default=None, help="PGD step (default: 2.5 * eps / attack steps)")
    p.add_argument("--restarts", type=int, default=1, help="random restarts; the per-sample worst is kept")
    p.add_argument("--no-random-start", dest="random_start", action="store_false",
                   help="start PGD/APGD at the clean image")
    p.add_argument("--square-queries", type=int, default=1000, help="Square's query budget per image")
    p.add_argument("--square-limit", type=int, default=None,
                   help="run the black-box attacks (Square) on a subset of N images (default: all)")
    p.add_argument("--ensemble", action="store_true",
                   help="add the per-sample worst case over the image attacks (AutoAttack-style)")
    p.add_argument("--exhaustive", action="store_true",
                   help="a suite's members attack every image (default: early exit, later members only attack "
                        "images still ranked within R@10, and stop querying an image once it is beyond; "
                        "identical i2t metrics, see docs/evaluation.md)")
    p.add_argument("--exit-k", type=int, default=None,
                   help="early exit: an image is done once its best caption ranks at or beyond this (default: "
                        "10, the largest reported k, lowered to the largest k the set can miss: 5 on 6-10 "
                        "classes, 1 on at most 5; 1 when only R@1 matters, as AutoAttack's accuracy: R@5 "
                        "and R@10 are then upper bounds)")
    p.add_argument("--objective", default="contrastive",
                   help="image objective the attacks maximise: contrastive (cross-entropy; itc), margin (the CW "
                        "margin), dlr (AutoAttack's DLR), embedding; BLIP: itm, rerank (written in the threat-model "
                        "line as objective=)")
    p.add_argument("--logit-scale", type=float, default=None,
                   help="the cross-entropy objective attacks these logits x cosine (RobustVLM's protocol: 100; "
                        "margin and DLR are scale-invariant; default: the model's own logit scale)")
    p.add_argument("--gallery", default="full", help="objective against the full caption gallery or the batch")
    p.add_argument("--surrogate", default=None,
                   help="surrogate model of the transfer attack (default: none; needed by --attack transfer)")
    p.add_argument("--text-budget", type=int, default=3, help="character edits per caption (text, joint)")
    p.add_argument("--attack-option", dest="attack_option", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="an option an attack declares (advlora list attacks), e.g. apgd-t.targets=3; repeatable; "
                        "written in the attack's threat-model line (--square-queries N is square.queries=N)")
    p.add_argument("--plan", default=None, metavar="FILE.yaml",
                   help="the evaluation plan as YAML: attack_options ({apgd-t: {targets: 3}}) and any of "
                        f"{', '.join(PLAN_KEYS)}; a flag given with another value wins (default: none)")
    add_dtype_argument(p, "precision of evaluation and attacks (written in every threat-model line)")
    p.add_argument("--no-sanity", dest="sanity", action="store_false", help="skip the sanity checks")
    p.add_argument("--sanity-limit", type=int, default=64, help="images for the costly sanity checks")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_data_args(p)
    p.add_argument("--attack", default="pgd",
                   help=f"the attack evaluated, a registered name or a comma list; {LIST_HELP}")
    add_protocol_arg(p)
    add_threat_args(p, eps_default="4/255")
    add_out_arg(p, "attack")
    add_json_argument(p, "metrics.json")


def run(args: argparse.Namespace) -> int:
    if args.attack == "list":
        return list_attacks()
    apply_protocol(args, add_arguments, attacks=("attack", "--attack"))
    attacks = [a.strip() for a in args.attack.split(",") if a.strip()]
    robust_options(args, attacks)
    if args.out:
        check_out(args.out, overwrite=args.overwrite)
    return run_robust(args, attacks, command="attack")


def check_norm(attacks: list[str] | str, norm: str) -> None:
    """Refuse an attack, or a suite with a member, that does not implement ``--norm`` (Square: linf only), in
    one line before any data or model is read (``registry.check_norm``), not after the members before it ran."""
    from advlora.attacks import NORMS, registry

    if norm not in NORMS:
        raise choices_error("norm", norm, NORMS)
    registry.check_norm(attacks, norm)


def list_attacks() -> int:
    """Print the attack registry, as ``advlora list attacks``."""
    from advlora.cli import listing

    return listing.run(argparse.Namespace(kind="attacks", json=False))


def run_robust(args: argparse.Namespace, attacks: list[str], *, command: str) -> int:
    """Evaluate ``attacks`` (none: clean only) at every eps of ``--eps`` on every data set of ``--data`` (a comma
    list): ``advlora.evaluation.sweep``. Writes metrics.json, one results file per (data set, threat model)
    under ``results/``, config.yaml and manifest.json; prints each set's table, and with several sets the
    transfer table (with an adapter, beside the same model without it)."""
    import torch

    from advlora.evaluation.sweep import adapter_provenance, evaluate_sweep

    settings, threats = robust_options(args, attacks)
    specs = data_specs(args.data)
    dtype = getattr(torch, getattr(args, "dtype", "float32"))
    model = _load(args, dtype, adapter=True)
    for t in threats:
        t.check_image_size(model.image_size)
    surrogate = None
    if args.surrogate:
        surrogate = model_loader()(args.surrogate, device=str(model.device)).to(dtype)
    sweep_device = model.device
    datasets = _datasets(args, specs)
    sweep = evaluate_sweep(model, datasets, threats, settings, model_id=args.model, adapter=args.adapter,
                           split=args.split, surrogate=surrogate)
    prov = adapter_provenance(args.adapter)
    baseline = None
    if args.adapter and len(specs) > 1:   # the transfer table's reference: the same model without the adapter
        del model
        baseline = evaluate_sweep(_load(args, dtype, adapter=False), datasets, threats, settings, model_id=args.model,
                                  split=args.split, surrogate=surrogate)
    config = {k: v for k, v in vars(args).items() if k not in ("overrides",)}
    config["threat_models"] = [{"norm": t.norm, "eps": t.eps_text, "steps": t.steps,
                                "step_size": t.step, "restarts": t.restarts, "random_start": t.random_start,
                                "seed": t.seed} for t in threats]
    out = args.out or default_out(command)
    metrics = sweep.metrics()
    if baseline is not None:
        metrics["baseline"] = baseline.metrics()
    with run_folder(out, config, seed=args.seed, execution=execution(device=sweep_device, dtype=dtype),
                    command=command) as tmp:
        write_json(tmp / "metrics.json", metrics)
        write_results(tmp / "results", [(sweep, prov), *([(baseline, adapter_provenance(None))] if baseline else [])])
    if getattr(args, "json", False):
        print_json_file(Path(out) / "metrics.json")
    say = summary_stream(args)
    for r in sweep.results:
        m = r.metrics_json(args.model, args.adapter)
        print(f"{r.name}: gallery of {r.n_images} {r.kind}s, {r.n_texts} "
              f"{'classes' if r.task == 'classification' else 'captions'}"
              f"; model {args.model}" + (f" + adapter {args.adapter}" if args.adapter else ""), file=say)
        print(robust_table(m), file=say)
        if attacks:
            print(f"sanity verdict: {r.verdict}" if r.sanity else "sanity checks: skipped (--no-sanity)", file=say)
        if r.sanity:
            print("sanity checks:", file=say)
            print("\n".join(f"  {c}" for c in r.sanity), file=say)
    if len(specs) > 1:
        print(transfer_table(sweep, baseline, prov["trained_on"]), file=say)
    print(f"run folder: {out}", file=say)
    return 0


def robust_options(args: argparse.Namespace, attacks: list[str]) -> tuple[object, list]:
    """The sweep's settings and the threat models of ``--eps`` (each radius of a sweep; none without attacks),
    from the flags of ``attack`` and ``eval``. Made before any work, so that a bad value (``--eps 4`` for 4/255,
    ``--batch-size 0``) is one line at once."""
    from advlora.attacks import ThreatModel, parse_eps_list
    from advlora.evaluation.sweep import SweepSettings

    for flag, value in (("--batch-size", args.batch_size), ("--sanity-limit", args.sanity_limit),
                        ("--frames", getattr(args, "frames", None) or 1)):
        if value < 1:
            raise AdvloraError(f"{flag} must be >= 1, got {value}"
                               + (" (--no-sanity skips the checks)" if flag == "--sanity-limit" else ""))
    if attacks:
        check_norm(attacks, args.norm)
    attack_options = plan_file(args)
    settings = SweepSettings(attacks=list(attacks), attack_options=attack_options, rerank_k=args.rerank_k,
                             batch_size=args.batch_size,
                             square_limit=args.square_limit, square_queries=args.square_queries,
                             ensemble=args.ensemble, seed=args.seed, objective=args.objective, gallery=args.gallery,
                             text_budget=args.text_budget, sanity=args.sanity, sanity_limit=args.sanity_limit,
                             exhaustive=args.exhaustive, exit_k=args.exit_k, logit_scale=args.logit_scale,
                             **({"protocol": args.protocol_record} if getattr(args, "protocol_record", None) else {}))
    threats = [ThreatModel(norm=args.norm, eps=e, step_size=args.step_size, steps=args.steps, restarts=args.restarts,
                           random_start=args.random_start, seed=args.seed)
               for e in (parse_eps_list(args.eps) if attacks else [])]
    return settings, threats


def plan_file(args: argparse.Namespace) -> dict:
    """The attack options of ``--plan`` (a YAML file) and ``--attack-option`` (later wins), checked against
    what each attack declares; the file's other ``PLAN_KEYS`` are set on ``args`` where the flag kept the
    plan's default. Anything unknown is one line."""
    from advlora.config import load_yaml
    from advlora.evaluation.plan import EvalPlan, attack_options_from

    base: dict = {}
    if getattr(args, "plan", None):
        data = load_yaml(args.plan)
        if not isinstance(data, dict):
            raise AdvloraError(f"{args.plan}: an evaluation plan is a mapping "
                               f"(attack_options, {', '.join(PLAN_KEYS)})")
        defaults = {f: EvalPlan.__dataclass_fields__[f].default for f in PLAN_KEYS}
        for key, value in data.items():
            if key == "attack_options":
                base = value or {}
            elif key in PLAN_KEYS:
                if getattr(args, key) == defaults[key]:
                    setattr(args, key, value)
            else:
                raise choices_error(f"{args.plan}: plan key", key, ("attack_options", *PLAN_KEYS))
        if not isinstance(base, dict):
            raise AdvloraError(f"{args.plan}: attack_options must map attack names to {{KEY: VALUE}}")
    return attack_options_from(getattr(args, "attack_option", None), base)


def data_specs(text: str) -> list[str]:
    """``--data A,B,C`` -> the names (an annotation path with a comma is one name when it exists)."""
    from pathlib import Path

    if Path(text).exists():
        return [text]
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise AdvloraError("--data: no data set named")
    return list(dict.fromkeys(specs))


def _load(args: argparse.Namespace, dtype, *, adapter: bool):
    """The model of ``--model`` (with ``--adapter`` when ``adapter``) in ``dtype``, whatever precision the
    checkpoint was stored in."""
    return load_model_and_adapter(args if adapter else argparse.Namespace(**{**vars(args), "adapter": None})).to(dtype)


def _datasets(args: argparse.Namespace, specs: list[str]) -> list[tuple[str, object]]:
    from advlora.data import load_dataset
    from advlora.evaluation.results import KS

    extra = {k: getattr(args, k) for k in ("image_root", "frames") if getattr(args, k, None) is not None}
    out = [(spec, load_dataset(spec, args.split, fmt=args.fmt if len(specs) == 1 else None, limit=args.limit,
                               seed=args.seed, **extra)) for spec in specs]
    if args.limit is not None and args.limit < max(KS) and int(os.environ.get("RANK", "0")) == 0:
        print(f"advlora {args.command}: warning: --limit {args.limit} is below the largest k ({max(KS)}): with "
              f"{args.limit} images to rank, text-to-image R@k for k >= {args.limit} is 100% by construction; r_mean "
              "depends on the gallery size, so compare it only at the same --limit", file=sys.stderr)
    return out


def write_results(folder, sweeps: list) -> list:
    """One results JSON per (model, adapter, data set, threat model) of each (sweep, provenance) under ``folder``."""
    from pathlib import Path

    from advlora.evaluation.sweep import result_file_name, result_records
    from advlora.runs import manifest

    folder, man, written = Path(folder), manifest(), []
    for sweep, prov in sweeps:
        tag = "adapter" if sweep.adapter else "base"
        for rec in result_records(sweep, prov, man):
            path = folder / tag / result_file_name(rec)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, rec)
            written.append(path)
    return written


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}"


def transfer_table(sweep, baseline, trained_on: list[str]) -> str:
    """The transfer table: per data set clean and robust (headline metric: r_mean, or top1 for classification),
    the change from the model without the adapter, and whether the adapter was trained on the set."""
    from advlora.evaluation.sweep import transfer_rows
    from advlora.report.tables import metrics_table

    rows = transfer_rows(sweep, baseline, trained_on)
    table = {f"{r['data']}" + (f" @{r['eps']}" if r["eps"] else ""): {
        "task": r["task"], "metric": r["metric"], "n": r["n"], "clean": r["clean"], "robust": r["robust"],
        "attack": r["attack"], "d clean": _signed(r["d_clean"]), "d robust": _signed(r["d_robust"]),
        "trained on": "yes" if r["trained_on"] else ("no" if trained_on else "-")} for r in rows}
    ref = ("d = change from the same model without the adapter" if baseline is not None
           else "d: only with --adapter (the change from the model without it)")
    head = (f"transfer: {sweep.model}" + (f" + adapter {sweep.adapter}" if sweep.adapter else " (zero-shot)")
            + (f", trained on {', '.join(trained_on)}" if trained_on else "") + f"; robust = the worst attack; {ref}")
    return head + "\n" + metrics_table(table, columns=["task", "metric", "n", "clean", "robust", "attack", "d clean",
                                                       "d robust", "trained on"], first="data")


def robust_table(metrics: dict) -> str:
    """Clean and robust rows with attack success rates and the threat model beside every row."""
    from advlora.metrics import CLASSIFICATION_KEYS, METRIC_KEYS
    from advlora.report.tables import metrics_table

    keys = CLASSIFICATION_KEYS if metrics.get("task") == "classification" else METRIC_KEYS
    rows = {"clean": {**metrics["clean"], "threat": "none (clean)"}}
    for key, e in metrics["robust"].items():
        label = key + (" [subset]" if "subset" in e else "")
        rows[label] = {**e["metrics"], "asr_i2t": e["asr"]["i2t"], "asr_t2i": e["asr"]["t2i"],
                       "threat": e["threat"] + (f"; {e['subset']}, clean r_mean there {e['clean']['r_mean']:.1f}"
                                               if "subset" in e else "")}
    asr = ["asr_i2t"] if metrics.get("task") == "classification" else ["asr_i2t", "asr_t2i"]
    table = metrics_table(rows, columns=[*keys, *asr])
    lines = table.splitlines()
    width = max(len(s) for s in lines)
    threats = ["threat model", *[r["threat"] for r in rows.values()]]
    return "\n".join(f"{ln.ljust(width)}  {t}" for ln, t in zip(lines, threats))
