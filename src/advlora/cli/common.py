"""Arguments shared by several sub-commands, so that every command spells them the same way, and the help
formatter every command's ``--help`` uses (each option's default shown, the examples kept as written).

One spelling per idea: ``--batch-size`` (images per batch), ``--attack-steps`` (iterations of an attack; ``--steps``
is optimiser steps), ``--progress {auto,bar,log,off}``, ``--dtype``, ``--seed``, ``--random-model ARCH:SIZE``,
``--json``. An old spelling that still works is a hidden deprecated alias (``add_deprecated``): it stores the
same value and prints one warning line on stderr.
"""
from __future__ import annotations

import argparse
import sys

from advlora.errors import AdvloraError
from advlora.progress import PROGRESS

__all__ = ["DTYPES", "PROGRESS", "RANDOM_MODELS", "HelpFormatter"]

#: ``--dtype`` values: the precision a model is evaluated and attacked in
DTYPES = ("float32", "float64", "bfloat16", "float16")
#: the random models ``--random-model`` names (``advlora.models.tiny.SIZES``, kept torch-free here for --help)
RANDOM_MODELS = ("clip:test", "clip:tiny", "clip:vit-b32", "blip:test", "blip:tiny", "blip:blip-base")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help line, ``(default: X)``, unless the help already says it; the
    description and the examples (epilog) as written. Flags (no value) and options whose default is None (the
    help says what None means) get no suffix."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.nargs == 0 or action.default in (None, argparse.SUPPRESS)
                or "default" in text.lower()):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def examples(*lines: str) -> str:
    """An epilog of example command lines, one a line."""
    return "examples:\n" + "\n".join(f"  {ln}" for ln in lines)


def add_parser(sub, name: str, help_: str, *, example: str | None = None, **kw) -> argparse.ArgumentParser:
    """A sub-command (or action) parser with the shared formatter, its help as description, and its examples."""
    return sub.add_parser(name, help=help_, description=help_, epilog=example, formatter_class=HelpFormatter, **kw)


class _Deprecated(argparse.Action):
    """A hidden old spelling of an option: stores into the new option's ``dest`` and warns once on stderr."""

    def __init__(self, option_strings, dest, new: str = "", **kw) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"advlora: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_deprecated(p: argparse.ArgumentParser, old: str, *, dest: str, new: str, type=None,
                   const: object = None) -> None:
    """``old`` as a hidden alias of ``new`` (same ``dest``); with ``const`` a flag that stores ``const``."""
    kw = {"nargs": 0, "const": const} if const is not None else {"type": type}
    p.add_argument(old, dest=dest, action=_Deprecated, new=new, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                   **kw)


def add_progress_argument(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--progress", default="auto", choices=PROGRESS,
                   help=f"{what}: a bar on a terminal, else a line every 30 s (auto), or always bar, log or off")


def add_dtype_argument(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--dtype", default="float32", choices=DTYPES, help=what)


def add_json_argument(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true",
                   help=f"print {what} as one JSON object on stdout and nothing else (the summary goes to stderr)")


def add_random_model_argument(p: argparse.ArgumentParser, instead_of: str = "--model") -> None:
    p.add_argument("--random-model", default=None, metavar="ARCH:SIZE",
                   help=f"a randomly initialised model instead of {instead_of} (no download; default: none): "
                        + ", ".join(RANDOM_MODELS))
    add_deprecated(p, "--random-size", dest="random_model", new="--random-model")


def parse_random_model(text: str) -> tuple[str, str]:
    """``clip:vit-b32`` -> ``("clip", "vit-b32")``; anything else is one error line."""
    arch, sep, size = text.partition(":")
    if not sep or not arch or not size:
        raise AdvloraError(f"--random-model must look like clip:vit-b32 (ARCH:SIZE), got {text!r}")
    return arch, size


def print_json(data: object) -> None:
    """``data`` as one JSON object on stdout (``--json``): nothing else is printed there."""
    import json

    print(json.dumps(data, default=str, sort_keys=False))


def print_json_file(path) -> None:
    """A JSON file the command wrote (``metrics.json``) on stdout, as written (``--json``)."""
    from pathlib import Path

    sys.stdout.write(Path(path).read_text(encoding="utf-8"))
    sys.stdout.flush()


def summary_stream(args: argparse.Namespace):
    """Where a command's human summary goes: stdout, or stderr under ``--json``."""
    return sys.stderr if getattr(args, "json", False) else sys.stdout


def add_model_data_args(p: argparse.ArgumentParser, *, model_default: str = "tiny-clip",
                        data_default: str = "emoji") -> None:
    p.add_argument("--model", default=model_default,
                   help="hub id, local folder, tiny-clip, tiny-blip, tiny-siglip or an open_clip checkpoint "
                        "(advlora list models)")
    p.add_argument("--adapter", default=None,
                   help="adapter folder (peft format) to load onto the model (default: none)")
    p.add_argument("--data", default=data_default,
                   help="an embedded data set (emoji, emoji-source, emoji-downstream, emoji-video: advlora list "
                        "datasets) or an annotation file / folder")
    p.add_argument("--split", default="test", help="split of the data set")
    p.add_argument("--format", dest="fmt", default=None,
                   help="annotation format (default: detected from the file; advlora list formats)")
    p.add_argument("--limit", type=int, default=None,
                   help="a deterministic subset of N images / videos (default: all)")
    p.add_argument("--image-root", default=None,
                   help="folder the annotation's image/video paths are relative to (default: the file's folder)")
    p.add_argument("--frames", type=int, default=None, help="frames sampled per video (video sets; default 8)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch")
    add_deprecated(p, "--batch", dest="batch_size", new="--batch-size", type=int)
    p.add_argument("--rerank-k", type=int, default=-1,
                   help="BLIP: re-rank the top k of ITC by ITM (default: LAVIS's depth, 128, or 256 from 5,000 "
                        "images; 0 = ITC only)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset, the attacks' random starts and Square")


def add_out_arg(p: argparse.ArgumentParser, command: str) -> None:
    """``--out`` and ``--overwrite``: an existing folder is never replaced unless advlora created it and
    ``--overwrite`` is given (``advlora.runs.check_out``)."""
    p.add_argument("--out", default=None, help=f"run folder (default: runs/{command}-<timestamp>); an existing "
                   "one is refused, see --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out that advlora created (never a folder it did not create)")


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
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2 (mean and spread over them; "
                   "default: the config's)")


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
