"""Arguments shared by several sub-commands, so that every command spells them the same way."""
from __future__ import annotations

import argparse

from advlora.errors import AdvloraError


def add_model_data_args(p: argparse.ArgumentParser, *, model_default: str = "tiny-clip",
                        data_default: str = "emoji") -> None:
    p.add_argument("--model", default=model_default, help="hub id, local folder, tiny-clip, tiny-blip or tiny-siglip")
    p.add_argument("--adapter", default=None, help="adapter folder (peft format) to load onto the model")
    p.add_argument("--data", default=data_default, help="emoji, emoji-video, or an annotation file")
    p.add_argument("--split", default="test", help="split of the data set (default: test)")
    p.add_argument("--format", dest="fmt", default=None, help="annotation format (default: detected)")
    p.add_argument("--limit", type=int, default=None, help="a deterministic subset of N images / videos")
    p.add_argument("--image-root", default=None,
                   help="folder the annotation's image/video paths are relative to (default: the file's folder)")
    p.add_argument("--frames", type=int, default=None, help="frames sampled per video (video sets; default 8)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rerank-k", type=int, default=-1,
                   help="BLIP: re-rank the top k of ITC by ITM (default: LAVIS's depth, 128, or 256 from 5,000 images; "
                        "0 = ITC only)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)


def add_out_arg(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--out", default=None, help=f"run folder (default: runs/{command}-<timestamp>)")


def model_loader():
    """``advlora.models.load_model``, with the training stage imported: it registers the builder that
    pre-trains a ``tiny-<family>`` default on first use."""
    import advlora.training  # noqa: F401
    from advlora.models import load_model

    return load_model


def load_model_and_adapter(args: argparse.Namespace):
    """The model named by ``--model`` on ``--device``, with ``--adapter`` loaded when given."""
    from advlora.runtime import resolve_device

    model = model_loader()(args.model, device=resolve_device(args.device))
    if getattr(args, "adapter", None):
        from advlora.adapters import load_adapter

        load_adapter(model, args.adapter)
    return model


def add_seeds_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2 (mean and spread over them)")


def seeds_overrides(text: str | None) -> list[str]:
    """The value of --seeds as top-level experiment overrides (none when not given)."""
    if not text:
        return []
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise AdvloraError(f"--seeds {text!r}: expected comma-separated integers like 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise AdvloraError(f"--seeds {text!r}: expected distinct comma-separated integers like 0,1,2")
    return ["--seeds", str(seeds)]


def add_jobs_argument(p, default: int) -> None:
    """``--jobs N``: train cells of an experiment run at once in worker processes (0: one per core)."""
    p.add_argument("--jobs", type=int, default=default,
                   help="train cells run at once in worker processes, each with a share of the cores as torch threads "
                        f"(default {default}; 0: one per core, at most 4; 1: all in this process)")


def jobs(n: int) -> int:
    """The value of --jobs: 0 means one per core (``advlora.threads.default_jobs``)."""
    from advlora.threads import default_jobs  # torch: imported only once a command runs

    if n < 0:
        raise AdvloraError(f"--jobs must be >= 0, got {n}")
    return n or default_jobs()
