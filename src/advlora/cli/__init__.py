"""The ``advlora`` command: one sub-command per module of this package, imported only when it is the one run.

Each module in ``COMMANDS`` exposes ``add_arguments(parser)``, ``run(args) -> int`` and ``EXAMPLES`` (the
example command lines its ``--help`` ends with). ``build_parser`` is the one source of every parser:
``command_parsers()`` returns each command's full parser (for a generated CLI reference). Exit statuses are
those of ``advlora.errors.EXIT_CODES``: bad input raises ``AdvloraError`` (one line on stderr, 2); a file that
cannot be written (``WriteFailed``, or an ``OSError`` such as a full disk) is one line, 74; a command stopped by a
preemption signal or Ctrl-C after its checkpoint raises ``Preempted`` (one line, 75); Ctrl-C elsewhere is 130.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from advlora import __version__
from advlora.cli.common import HelpFormatter
from advlora.errors import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_PREEMPTED, EXIT_WRITE_FAILED, AdvloraError,
                            WriteFailed, exit_codes_text)
from advlora.preempt import Preempted

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
    "list": ("advlora.cli.listing", "list the registered attacks, models, data sets, formats, methods, objectives "
                                    "or configs"),
    "results": ("advlora.cli.results", "one table from the results files of many evaluations"),
}

#: the errors of a write that a user can act on (space, quota, permissions, read-only file system): one line
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                          errno.EIO})

DESCRIPTION = "Adversarially robust low-rank adaptation of vision-language models, and honest robust retrieval " \
              "evaluation."
EPILOG = ("examples:\n  advlora eval --model tiny-clip --data emoji --attacks pgd --eps 4/255\n"
          "  advlora list attacks\n  advlora COMMAND --help\n\nexit status:\n" + exit_codes_text())


def build_parser(command: str | None = None, *, every: bool = False
                 ) -> tuple[argparse.ArgumentParser, dict[str, object]]:
    """The parser with every sub-command listed and the modules given their arguments: ``command``'s only
    (``advlora --help`` and a typo import none, so they answer at once), or all of them with ``every``."""
    parser = argparse.ArgumentParser(prog="advlora", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"advlora {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (mod_name, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        if every or name == command:
            modules[name] = importlib.import_module(mod_name)
            modules[name].add_arguments(p)
            p.epilog = getattr(modules[name], "EXAMPLES", None)
    return parser, modules


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's full parser (its ``--help`` is ``format_help()``), in the order of ``COMMANDS``; the
    source of a generated CLI reference. Sub-actions (``data check``, ``adapter info``) are reached through
    each parser's sub-parsers action, see ``subcommand_parsers``."""
    parser, _ = build_parser(every=True)
    return dict(_sub(parser).choices)


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The action parsers of a command with actions (``data``, ``adapter``); empty for the others."""
    action = _sub(parser, required=False)
    return dict(action.choices) if action is not None else {}


def _sub(parser: argparse.ArgumentParser, required: bool = True):
    for a in parser._actions:  # argparse exposes sub-parsers only through this attribute
        if isinstance(a, argparse._SubParsersAction):
            return a
    if required:
        raise ValueError(f"{parser.prog} has no sub-commands")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, modules = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    mod = modules[args.command]
    if extra and not getattr(mod, "ACCEPTS_OVERRIDES", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    if not getattr(mod, "TORCH_FREE", False):
        from advlora.runtime import quiet_libraries  # torch: imported only once a command runs

        quiet_libraries()
    try:
        return int(mod.run(args) or 0)
    except WriteFailed as e:
        print(f"advlora {args.command}: error: {e}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except OSError as e:
        if e.errno not in WRITE_ERRNOS or args.verbose:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"advlora {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except AdvloraError as e:
        print(f"advlora {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Preempted as e:
        print(f"advlora {args.command}: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        print(f"advlora {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
