"""``advlora train``: adversarial training of any adapter method into a run folder.

The YAML (``advlora list configs``; e.g. ``advlora/configs/advlora-tiny-clip.yaml``) has the sections model,
data, adapter, attack, train and eval; plain flags override it, dotted overrides (``--train.lr 1e-4``) override
both. The attack flags describe the training attack (``--attack``, ``--eps``, ``--attack-steps``): its radius
defaults to 2/255, half the 4/255 that ``advlora eval`` and ``advlora attack`` evaluate at by default.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path

from advlora.cli.common import (
    PROGRESS,
    add_deprecated,
    add_json_argument,
    add_random_model_argument,
    examples,
    print_json,
    summary_stream,
)
from advlora.config import load_yaml, parse_overrides, set_dotted
from advlora.errors import AdvloraError

ACCEPTS_OVERRIDES = True

#: plain flag -> dotted config key
FLAGS = {"model": "model.name", "data": "data.name", "method": "adapter.method", "rank": "adapter.rank",
         "steps": "train.steps", "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr",
         "eps": "attack.eps", "seed": "train.seed", "attack": "attack.name", "device": "train.device",
         "image_root": "data.image_root", "frames": "data.frames", "fmt": "data.format", "split": "data.train_split",
         "eval_data": "data.eval_name", "attack_steps": "attack.steps", "random_model": "model.random",
         "progress": "train.progress", "objective": "train.objective", "norm": "attack.norm",
         "attack_loss": "attack.attack_loss", "shots": "data.shots", "shot_seed": "data.shot_seed"}

#: the run config's defaults the help names (``RunConfig()``; tests/cli/test_cli.py checks they agree), kept here
#: so that ``advlora train --help`` imports no torch
DEFAULTS = {"model.name": "tiny-clip", "data.name": "emoji", "data.train_split": "train", "adapter.method": "advlora",
            "adapter.rank": 8, "train.epochs": 1, "train.batch_size": 32, "attack.name": "pgd",
            "attack.eps": "2/255", "attack.steps": 3, "train.seed": 0, "train.objective": "tecoa",
            "attack.attack_loss": "contrastive", "data.shot_seed": 1}

EXAMPLES = examples(
    "advlora train --model tiny-clip --data emoji-downstream --method advlora --steps 50 --out runs/a",
    "advlora train --config advlora-tiny-clip --train.lr 1e-4 --eps 4/255      # a shipped config, overridden",
    "advlora train --data emoji-cls --shots 16 --shot-seed 1 --method lora --objective tecoa   # few-shot",
    "advlora train --out runs/a --resume                                      # after exit status 75",
    "torchrun --nproc_per_node 2 -m advlora train --config run.yaml --out runs/ddp   # data-parallel")


def _d(key: str) -> str:
    return f"(default: {DEFAULTS[key]}, from the config)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="run config YAML (a path, or the name of a shipped config "
                   "such as advlora-tiny-clip: advlora list configs; default: the built-in defaults)")
    p.add_argument("--model", default=None,
                   help=f"hub id, local folder, tiny-clip, tiny-blip, tiny-siglip {_d('model.name')}")
    add_random_model_argument(p)
    p.add_argument("--data", default=None, help="emoji-downstream, emoji-source, emoji, emoji-video, an annotation "
                   "file, a shard pattern, a folder of images (objectives without captions: fare), or a "
                   "classification set (class folders, emoji-cls, emoji-group, digits: trained as the "
                   f"class-prompt classifier) {_d('data.name')}")
    p.add_argument("--shots", type=int, default=None, help="classification sets: train on K images per class, a "
                   "balanced k-shot sample recorded as fewshot.json in the run folder (default: every image)")
    p.add_argument("--shot-seed", type=int, default=None,
                   help=f"seed of the k-shot sample: the same images for every method {_d('data.shot_seed')}")
    p.add_argument("--eval-data", default=None, help="data set of validation and the final test (default: --data; "
                   "needed when --data names shards)")
    # the data flags of `advlora eval`, spelled the same
    p.add_argument("--split", default=None, help="training split (default: train; val and test: data.val_split, "
                   "data.test_split)")
    p.add_argument("--format", dest="fmt", default=None, help="annotation format (default: detected)")
    p.add_argument("--image-root", default=None,
                   help="folder the annotation's image/video paths are relative to (default: the file's folder)")
    p.add_argument("--frames", type=int, default=None, help="frames sampled per video (video sets; default 8)")
    p.add_argument("--method", default=None, help=f"adapter method: advlora list methods {_d('adapter.method')}")
    p.add_argument("--objective", default=None, help="training objective: advlora list objectives; tecoa "
                   "(adversarial cross-entropy over the class prompts on a classification set, contrastive on "
                   "captions), fare (embedding distance to the original model; images only), trades, "
                   f"mix, fgsm-rs, fap (FAP: clean cross-entropy + cosine-weighted KL), pmg-aft (PMG-AFT: "
                   f"cross-entropy + KL to the clean and to the original model's predictions) {_d('train.objective')}")
    p.add_argument("--rank", type=int, default=None, help=f"adapter rank {_d('adapter.rank')}")
    p.add_argument("--steps", type=int, default=None,
                   help="optimiser steps (default: --epochs passes over the training images)")
    p.add_argument("--epochs", type=int, default=None, help=f"passes over the training images {_d('train.epochs')}")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"global batch size, images per step over all processes {_d('train.batch_size')}")
    add_deprecated(p, "--batch", dest="batch_size", new="--batch-size", type=int)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-3 for adapters, 1e-4 for full)")
    p.add_argument("--attack", default=None, help="the training attack, crafted at every step: pgd, fgsm, apgd, or "
                   f"none for clean training {_d('attack.name')}")
    p.add_argument("--eps", default=None, help="training attack radius, e.g. 2/255 (default: 2/255, from the config; "
                   "advlora eval evaluates at 4/255 by default)")
    p.add_argument("--attack-steps", type=int, default=None,
                   help=f"iterations of the training attack {_d('attack.steps')}")
    p.add_argument("--norm", default=None,
                   help="the training attack's ball, linf or l2 (default: linf, the config's attack.norm; l2 radii "
                        "are larger, e.g. --eps 0.5)")
    p.add_argument("--attack-loss", default=None,
                   help="the loss the training attack maximises: contrastive (cross-entropy), margin (the CW "
                        f"margin) or dlr; objectives tecoa, mix and fgsm-rs {_d('attack.attack_loss')}")
    p.add_argument("--seed", type=int, default=None, help=f"seed of the run and the adapter {_d('train.seed')}")
    p.add_argument("--device", default=None, help="cpu to force the CPU (default: cuda when available)")
    p.add_argument("--out", default=None, help="run folder (default: runs/train-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (a "
                   "missing or empty --out starts at step 0, so that a job script can always pass it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the advlora run folder --out (never a folder advlora did not create)")
    p.add_argument("--progress", default=None, choices=PROGRESS,
                   help="progress of the steps: a bar on a terminal, else a line every 30 s (auto), or always bar, "
                        "log or off (default: auto, the config's train.progress)")
    add_deprecated(p, "--no-progress", dest="progress", new="--progress off", const="off")
    add_json_argument(p, "the final test's metrics")


def config_path(value: str | None) -> Path | None:
    """A file path, or the name of a config shipped in ``advlora/configs``."""
    if value is None:
        return None
    path = Path(value)
    if path.exists():
        return path
    shipped = Path(__file__).resolve().parent.parent / "configs" / (value if value.endswith(".yaml") else
                                                                     f"{value}.yaml")
    return shipped if shipped.exists() else path


def build_config(args: argparse.Namespace):
    from advlora.training.config import load_run_config  # torch and peft: imported only once a command runs

    flags: dict = {}
    for name, key in FLAGS.items():
        value = getattr(args, name, None)
        if value is not None:
            set_dotted(flags, key, value)
    path = config_path(args.config)
    if path is None and args.resume and args.out and (Path(args.out) / "config.yaml").is_file():
        path = Path(args.out) / "config.yaml"          # --resume alone continues with the run's own config
    if path is not None:
        load_yaml(path)                                 # one clear line for a missing or malformed file
    return load_run_config(path, parse_overrides(list(args.overrides or [])), base=flags)


def run(args: argparse.Namespace) -> int:
    from advlora.data.check import check_inputs
    from advlora.data.images import check_image_folder, is_caption_free_folder
    from advlora.preempt import Preempted
    from advlora.report.tables import metrics_table
    from advlora.runs import check_out, default_out, is_empty, replacing
    from advlora.training import train
    from advlora.training.checkpoint import list_checkpoints

    if args.resume and args.overwrite:
        raise AdvloraError("--resume continues --out and --overwrite replaces it: give one of them")
    out = Path(args.out) if args.out else default_out("train")
    main_process = int(os.environ.get("RANK", "0")) == 0    # under torchrun the others follow rank 0's folder
    if main_process:
        check_out(out, overwrite=args.overwrite, resume=args.resume)
    config = build_config(args)
    d = config.data
    # every split the run will read (training, validation, final test), its files and one decoded sample, before
    # the first step: a missing test split is found now, not after the training
    if d.sharded or is_caption_free_folder(d.name):
        if d.sharded:
            check_inputs(d.name, [d.train_split])
        else:
            check_image_folder(d.name, d.train_split)
        try:
            check_inputs(d.eval_set, [d.val_split, d.test_split], fmt=d.format, image_root=d.image_root,
                         frames=d.frames)
        except AdvloraError as e:
            raise AdvloraError(f"--eval-data {d.eval_set}: {e}") from None
    else:
        check_inputs(d.name, [d.train_split, d.val_split, d.test_split], fmt=d.format, image_root=d.image_root,
                     frames=d.frames)
    # what this command creates: the first missing folder of --out, or the files of an empty one
    made = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)
    was_empty = made is None and is_empty(out)
    started = lambda: bool(list_checkpoints(out / "checkpoints")) or (out / "history.csv").exists()  # noqa: E731
    try:
        with replacing(out, lambda folder: started()) if args.overwrite and main_process \
                else contextlib.nullcontext():
            result = train(config, out, resume=args.resume, argv=sys.argv[1:])
    except BaseException as e:
        _end_distributed(barrier=False)   # the other ranks may be inside a collective: waiting would hang
        if main_process and not args.overwrite and not isinstance(e, Preempted) and not started():
            # failed before its first step (a model not found): a rejected command leaves nothing behind
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
            elif was_empty:
                for p in out.iterdir():
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise
    _end_distributed()
    if result.metrics:
        m = result.metrics
        if args.json:
            print_json(m)
        say = summary_stream(args)
        rows = {"clean": m["clean"]}
        if "robust" in m:
            rows[f"{m['attack']} robust"] = m["robust"]
        print(f"{config.method}: {result.steps} steps, {result.trainable_params} trainable parameters, "
              f"{result.train_time_s:.1f} s; {m['split']} split, {m['n_images']} {m.get('kind', 'image')}s, "
              f"{m['n_texts']} captions", file=say)
        print(metrics_table(rows), file=say)
        if m.get("threat"):
            print(f"robust: {m['threat']}", file=say)
        print(f"run folder: {out}", file=say)
    return 0


def _end_distributed(barrier: bool = True) -> None:
    """Leave the process group (gloo workers that exit without this abort about one run in four). After an
    error there is no barrier: a rank that failed exits, and torchrun stops the others."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            if barrier:
                dist.barrier()
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - teardown is best effort
        pass
