"""The ``advlora`` command: one sub-command per module of this package, imported only when it is the one run.

Each module in ``COMMANDS`` exposes ``add_arguments(parser)`` and ``run(args) -> int``. Bad input raises
``AdvloraError``, which ``main`` prints as one line on stderr with exit status 2. A training stopped by a
preemption signal raises ``Preempted`` after its checkpoint: one line, exit status 75
(``advlora.preempt``).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from advlora.errors import AdvloraError
from advlora.preempt import PREEMPTED_EXIT, Preempted

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("advlora.cli.data", "build the embedded data sets, or check a data set on disk"),
    "pretrain": ("advlora.cli.pretrain", "pre-train the tiny CLIP or BLIP on the emoji benchmark"),
    "eval": ("advlora.cli.eval", "evaluate retrieval, clean and under attack"),
    "attack": ("advlora.cli.attack", "run one attack and report robust retrieval"),
    "adapter": ("advlora.cli.adapter", "attach, inspect, export or merge adapters"),
    "train": ("advlora.cli.train", "adversarial training of any adapter method"),
    "demo": ("advlora.cli.demo", "the end-to-end AdvLoRA-vs-baselines demo on the embedded default"),
    "grid": ("advlora.cli.grid", "run a grid of methods x attacks x eps x datasets x seeds"),
    "ablate": ("advlora.cli.ablate", "ablate AdvLoRA's parts under one budget"),
    "analyze": ("advlora.cli.analyze", "singular spectra of weight updates and alpha statistics"),
    "bench": ("advlora.cli.bench", "efficiency ratios measured side by side"),
    "results": ("advlora.cli.results", "one table from the results files of many evaluations"),
}


def build_parser(command: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, object]]:
    """The parser with every sub-command listed; only ``command``'s module is imported and given its arguments
    (``advlora --help`` and a typo import none, so they answer at once)."""
    parser = argparse.ArgumentParser(prog="advlora", description="Adversarially robust low-rank adaptation of "
                                     "vision-language models, and honest robust retrieval evaluation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (mod_name, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            modules[name] = importlib.import_module(mod_name)
            modules[name].add_arguments(p)
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, modules = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    mod = modules[args.command]
    from advlora.runtime import quiet_libraries  # torch: imported only once a command runs

    quiet_libraries()
    if extra and not getattr(mod, "ACCEPTS_OVERRIDES", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(mod.run(args) or 0)
    except AdvloraError as e:
        print(f"advlora {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"advlora {args.command}: {e}", file=sys.stderr)
        return PREEMPTED_EXIT
    except KeyboardInterrupt:
        print(f"advlora {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
