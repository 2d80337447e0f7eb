"""``advlora protocol base-to-new|cross-dataset|few-shot``: the field's few-shot protocols, one command each.

Each runs an experiment (``advlora.experiments.protocol_runs``: the grid's cells, resumable) into ``--out`` and
prints its table; the folder holds ``protocol.json`` (the settings, the table, the k-shot samples), ``table.md``,
the grid's ``summary.json`` and report, and ``fewshot/`` (each k-shot sample the methods trained on).
"""
from __future__ import annotations

import argparse

from advlora.cli.common import (
    add_jobs_argument,
    add_parser,
    add_progress_argument,
    add_random_model_argument,
    examples,
    jobs,
    seeds_overrides,
)
from advlora.errors import AdvloraError

#: the methods compared by default: (label, adapter method) as ``--method`` spells them
DEFAULT_METHODS = ("frozen=zero-shot", "lora=adv. LoRA", "advlora=AdvLoRA")

EXAMPLES = examples(
    "advlora protocol base-to-new --data emoji-cls                      # zero-shot, adv. LoRA, AdvLoRA",
    "advlora protocol cross-dataset --data emoji-cls --targets emoji-group,emoji-subgroup,digits,emoji",
    "advlora protocol few-shot --data digits --method advlora --shots 1,2,4 --seeds 1,2,3",
    "advlora protocol base-to-new --data my_classes/ --model openai/clip-vit-base-patch32 --seeds 1,2,3")

#: per action: (help, default --shots, default --seeds, example)
ACTIONS = {
    "base-to-new": ("train on k shots of the base classes (the first half by sorted label), evaluate base and new "
                    "classes clean and robust, and report their harmonic mean H", "16", "1",
                    "advlora protocol base-to-new --data emoji-cls --shots 16 --seeds 1,2,3"),
    "cross-dataset": ("train on one set, evaluate on a list of sets (classification and retrieval mixed): the "
                      "transfer table", "16", "1",
                      "advlora protocol cross-dataset --data emoji-cls --targets emoji-cls,emoji-group,digits,emoji"),
    "few-shot": ("a shots x seeds sweep: mean and spread over the seeds per (method, shots) cell",
                 "1,2,4,8,16", "1,2,3", "advlora protocol few-shot --data digits --shots 1,2,4,8,16 --seeds 1,2,3"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="PROTOCOL", required=True)
    for name, (help_, shots, seeds, example) in ACTIONS.items():
        a = add_parser(sub, name, help_, example=examples(example))
        _common(a, name, shots, seeds)


def _common(p: argparse.ArgumentParser, action: str, shots: str, seeds: str) -> None:
    p.add_argument("--data", required=True,
                   help="the training set: a class-folder tree (imagefolder) or an embedded classification set "
                        "(emoji-cls, emoji-group, emoji-subgroup, digits)"
                        + ("; any training set of advlora train" if action == "cross-dataset" else ""))
    if action == "cross-dataset":
        p.add_argument("--targets", required=True,
                       help="comma-separated sets to evaluate on (classification and retrieval mixed, e.g. "
                            "emoji-cls,emoji-group,digits,emoji; the training set too, if you want it)")
    p.add_argument("--method", action="append", default=None, metavar="NAME[=LABEL]",
                   help="an adapter method (advlora list methods), with the label its row gets; repeatable; "
                        "frozen is evaluated as it is (zero-shot) (default: " + ", ".join(DEFAULT_METHODS) + ")")
    p.add_argument("--model", default="tiny-clip", help="model name or folder (default tiny-clip)")
    add_random_model_argument(p)
    p.add_argument("--shots", default=shots,
                   help=f"images per class of the k-shot training sample (default {shots}"
                        + ("; 0: every training image)" if action == "cross-dataset" else ")")
                        + ("; comma-separated: the sweep" if action == "few-shot" else ""))
    p.add_argument("--seeds", default=seeds, help=f"comma-separated seeds: each draws its own k-shot sample and "
                                                  f"training order (default {seeds})")
    b = p.add_argument_group("training budget (shared by every trained method)")
    b.add_argument("--steps", type=int, default=60, help="optimiser steps per run (default 60)")
    b.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    b.add_argument("--lr", type=float, default=None, help="learning rate (default: each method's own)")
    b.add_argument("--objective", default=None,
                   help="training objective (advlora list objectives; default tecoa: adversarial cross-entropy "
                        "over the class prompts)")
    b.add_argument("--train-eps", default="2/255", help="the training attack's radius, linf (default 2/255)")
    b.add_argument("--train-attack-steps", type=int, default=3, help="PGD steps of the training attack (default 3)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--attacks", default="pgd", help="comma-separated attacks (default pgd)")
    e.add_argument("--eps", default=None,
                   help="comma-separated radii, linf (default: the training eps, --train-eps)")
    e.add_argument("--attack-steps", type=int, default=10, help="iterations of the evaluation attacks (default 10)")
    e.add_argument("--limit", type=int, default=200,
                   help="images per evaluated set: a seeded subset of the test split (default 200; 0: all)")
    e.add_argument("--no-sanity", dest="sanity", action="store_false",
                   help="skip the robust evaluation's sanity checks (default: run them)")
    p.add_argument("--out", default=None, help=f"output folder (default: runs/{action}-<data>); an existing one "
                                                 f"made by this protocol resumes")
    add_jobs_argument(p, 1)
    add_progress_argument(p, "train cells done")


def parse_methods(values: list[str] | None) -> list[tuple[str, str]]:
    """``NAME[=LABEL]`` values -> (label, method); an unknown method is one line."""
    from advlora.adapters import METHODS

    out = []
    for v in values or DEFAULT_METHODS:
        name, _, label = v.partition("=")
        name, label = name.strip(), (label.strip() or name.strip())
        if name not in METHODS:
            raise AdvloraError(f"--method {name!r}: unknown adapter method (valid: {', '.join(METHODS)})")
        out.append((label, name))
    labels = [lab for lab, _ in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise AdvloraError(f"--method: the label {dup[0]!r} is used twice")
    return out


def _ints(flag: str, text: str) -> list[int]:
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise AdvloraError(f"{flag} {text!r}: expected comma-separated integers") from None


def settings_of(args: argparse.Namespace):
    """The ``ProtocolSettings`` of the flags (bad input: one line, before any work)."""
    from advlora.data.fewshot import split_part
    from advlora.experiments.protocol_runs import ProtocolSettings

    if split_part(args.data)[1] is not None:
        raise AdvloraError(f"--data {args.data}: name the whole set; the protocol chooses its classes")
    seeds = _ints("--seeds", args.seeds)
    seeds_overrides(",".join(map(str, seeds)) or "x")   # distinct integers, checked as advlora grid does
    shots = [k for k in _ints("--shots", args.shots) if not (args.action == "cross-dataset" and k == 0)]
    if args.limit is not None and args.limit < 0:
        raise AdvloraError(f"--limit must be >= 0, got {args.limit}")
    for flag, v in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--attack-steps", args.attack_steps),
                    ("--train-attack-steps", args.train_attack_steps)):
        if v < 1:
            raise AdvloraError(f"{flag} must be >= 1, got {v}")
    targets = [t.strip() for t in getattr(args, "targets", "").split(",") if t.strip()] \
        if args.action == "cross-dataset" else []
    return ProtocolSettings(
        kind=args.action, data=args.data, methods=parse_methods(args.method), targets=targets, shots=shots,
        seeds=seeds, model=args.model, random_model=args.random_model, objective=args.objective, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, train_eps=args.train_eps, train_steps=args.train_attack_steps,
        attacks=[a.strip() for a in args.attacks.split(",") if a.strip()],
        eval_eps=[e.strip() for e in (args.eps or "").split(",") if e.strip()], eval_steps=args.attack_steps,
        limit=args.limit or None, sanity=args.sanity)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from advlora.experiments.grid import run_grid
    from advlora.experiments.protocol_runs import finish, grid_config, text_table
    from advlora.experiments.spec import slug
    from advlora.runs import check_experiment_out, mark_once

    settings = settings_of(args)
    cfg = grid_config(settings)
    out = args.out or f"runs/{args.action}-{slug(args.data)}"
    command = f"protocol {args.action}"
    check_experiment_out(out, command)
    summary, _ = run_grid(cfg, out, title=f"advlora protocol {args.action}: {args.data}", jobs=jobs(args.jobs),
                          progress=args.progress)
    result = finish(settings, cfg, Path(out), summary)
    mark_once(out, command)
    table = result["tables"][0]
    print(text_table(table))
    print(f"\n{table['caption']}")
    print(f"\nprotocol.json, table.md and the grid's report in {out} ({summary['elapsed_s']:.0f} s)")
    return 0
