"""``advlora eval``: clean metrics of a model (and adapter) on one or several data sets (``--data A,B,C``:
retrieval and classification sets alike), written to a run folder; with ``--attacks fgsm,pgd,apgd,square`` (and
``--eps 1/255,2/255,4/255``) robust metrics as ``advlora attack``. Several sets print one transfer table."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from advlora.cli.attack import (
    LIST_HELP,
    add_protocol_arg,
    add_threat_args,
    apply_protocol,
    data_specs,
    list_attacks,
    robust_options,
    run_robust,
)
from advlora.cli.common import (
    add_deprecated,
    add_json_argument,
    add_model_data_args,
    add_out_arg,
    add_progress_argument,
    examples,
    summary_stream,
)
from advlora.errors import AdvloraError
from advlora.preempt import Preempted, stop_requests
from advlora.runs import check_out, created_by, default_out, is_empty, mark

#: the folder under --out holding an attacked evaluation's finished batches until it completes
STATE = "eval-state"

EXAMPLES = examples(
    "advlora eval --model tiny-clip --data emoji                      # clean retrieval on the embedded default",
    "advlora eval --model tiny-clip --data emoji-source --attacks pgd --limit 8",
    "advlora eval --model tiny-clip --data emoji-cls --protocol robustvlm   # RobustVLM's zero-shot protocol",
    "advlora eval --data emoji-cls --protocol my-protocol.yaml       # a preset of your own",
    "advlora eval --model openai/clip-vit-base-patch32 --data coco/dataset_coco.json --image-root coco \\",
    "    --attacks standard --eps 4/255 --out runs/coco-standard --json > metrics.json",
    "torchrun --nproc_per_node 2 -m advlora eval --attacks pgd,apgd --out runs/e   # split over 2 processes",
    "advlora eval --out runs/e --attacks pgd,apgd --resume           # after exit status 75")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_data_args(p)
    p.add_argument("--attacks", default=None,
                   help=f"the attacks evaluated, a comma list of registered names, e.g. fgsm,pgd,apgd,square "
                        f"(default: clean only); {LIST_HELP}")
    add_deprecated(p, "--attack", dest="attacks", new="--attacks")
    add_protocol_arg(p)
    add_threat_args(p, eps_default="4/255")
    add_out_arg(p, "eval")
    p.add_argument("--resume", action="store_true",
                   help="continue an evaluation stopped by a signal or Ctrl-C (exit 75) from its finished batches "
                        "(same --out); a missing or empty --out starts afresh")
    add_progress_argument(p, "per-attack progress on the main process")
    add_json_argument(p, "metrics.json")


def run(args: argparse.Namespace) -> int:
    from advlora.data.check import check_inputs

    if getattr(args, "attacks", None) == "list":
        return list_attacks()
    apply_protocol(args, add_arguments)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()] if getattr(args, "attacks", None) else []
    robust_options(args, attacks)
    if int(os.environ.get("RANK", "0")) == 0:     # the other processes of torchrun see rank 0's folder
        check_eval_out(args, attacks)
    specs = data_specs(args.data)
    # every set's split, its files and one decoded sample, before the model loads or an attack starts
    for spec in specs:
        check_inputs(spec, [args.split], fmt=args.fmt if len(specs) == 1 else None, image_root=args.image_root,
                     frames=args.frames)
    if attacks:
        return _run_robust_session(args, attacks)
    return run_robust(args, [], command="eval")


def check_eval_out(args: argparse.Namespace, attacks: list[str]) -> None:
    """``--out``, ``--resume`` and ``--overwrite`` before any work: a stopped evaluation is continued with
    ``--resume`` (a missing or empty folder starts afresh, and says so); any other existing folder is refused
    unless advlora created it and ``--overwrite`` is given (``advlora.runs.check_out``)."""
    if args.resume and args.overwrite:
        raise AdvloraError("--resume continues --out and --overwrite replaces it: give one of them")
    if args.resume and not args.out:
        raise AdvloraError("--resume needs the --out of the stopped evaluation")
    if not args.out:
        return
    out = Path(args.out)
    stopped = (out / STATE / "session.json").is_file()
    if args.resume and attacks:
        if is_empty(out):
            print(f"--resume: no stopped evaluation in {out}; starting afresh", file=sys.stderr)
        elif not stopped:
            raise AdvloraError(f"--resume: {out} holds no stopped evaluation (no {STATE}/); choose another --out"
                               + (" or replace it with --overwrite" if created_by(out) else ""))
        return
    check_out(out, overwrite=args.overwrite, resume=False if stopped else None)


def _run_robust_session(args: argparse.Namespace, attacks: list[str]) -> int:
    """``run_robust`` inside an ``advlora.evaluation.distributed.EvalSession``: split across the processes of
    ``torchrun`` / ``accelerate launch``, stopped by SIGTERM/SIGUSR1/SIGUSR2 after a saved batch (exit 75), resumed
    with ``--resume``, with progress. Only the main process writes the run folder and prints."""
    import torch

    from advlora.evaluation.distributed import EvalSession, init_from_env

    rank, size, args.device = init_from_env(args.device)
    if args.resume and not args.out:
        raise AdvloraError("--resume needs the --out of the stopped evaluation")
    out = [str(args.out or default_out("eval"))]
    if size > 1:
        torch.distributed.broadcast_object_list(out, src=0)   # one folder, whatever each clock says
    args.out = out[0]
    skip = ("out", "resume", "progress", "device", "overrides", "command", "verbose", "json")
    fingerprint = json.loads(json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in skip}, default=str))
    scratch = None if rank == 0 else tempfile.mkdtemp(prefix="advlora-eval-rank")
    folder = Path(args.out)
    # the first folder of --out that does not exist yet: what a failure before any measurement removes
    created = next((p for p in reversed([folder, *folder.parents]) if not p.exists()), None)
    resumed = args.resume and (folder / STATE / "session.json").is_file()
    if rank == 0 and created_by(folder) is None:      # checked by check_eval_out: ours to write
        folder.mkdir(parents=True, exist_ok=True)
        mark(folder, "eval")
    session = None
    try:
        with stop_requests() as stop, EvalSession(state=folder / STATE, resume=args.resume, stop=stop,
                                                  progress=args.progress, fingerprint=fingerprint,
                                                  distributed=size > 1) as session:
            if rank == 0 and size > 1:
                print(f"distributed: {size} processes ({torch.distributed.get_backend()}), images split by index",
                      file=summary_stream(args))
            if rank == 0:
                code = run_robust(args, attacks, command="eval")
            else:   # the other processes attack their share; their copy of the outputs is thrown away
                with contextlib.redirect_stdout(io.StringIO()):
                    code = run_robust(argparse.Namespace(**{**vars(args), "out": scratch}), attacks, command="eval")
            if rank == 0 and session.restored:
                print(f"resumed: {session.restored} attacked samples read from finished batches in "
                      f"{args.out}/eval-state, {session.batches_run} batches run now", file=summary_stream(args))
        return code
    except Preempted:
        raise
    except BaseException:
        if rank == 0:
            _after_failure(folder, session, created=created, resumed=resumed)
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if size > 1:
            torch.distributed.destroy_process_group()


def _after_failure(folder: Path, session, *, created: Path | None, resumed: bool) -> None:
    """A failed evaluation leaves nothing it made unless it measured something: with no batch finished, the
    folders it created (``created``: the first of them; else the state it started in an existing folder) are
    removed; else the finished batches stay and one line says how to continue."""
    done = session is not None and (session.batches_run or session.restored)
    if done:
        print(f"advlora eval: the finished batches are kept in {folder / STATE}: continue with --resume --out "
              f"{folder}", file=sys.stderr)
    elif created is not None:
        shutil.rmtree(created, ignore_errors=True)
    elif not resumed:
        shutil.rmtree(folder / STATE, ignore_errors=True)
