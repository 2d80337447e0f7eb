"""The ``advlora`` command: one sub-command per module of this package, imported only when it is the one run.

Each module in ``COMMANDS`` exposes ``add_arguments(parser)``, ``run(args) -> int`` and ``EXAMPLES`` (the
example command lines its ``--help`` ends with). ``build_parser`` is the one source of every parser:
``command_parsers()`` returns each command's full parser (for a generated CLI reference). Exit statuses are
those of ``advlora.errors.EXIT_CODES``: bad input raises ``AdvloraError`` (one line on stderr, 2); a file that
cannot be written (``WriteFailed``, or an ``OSError`` such as a full disk) is one line, 74; a command stopped by a
preemption signal or Ctrl-C after its checkpoint raises ``Preempted`` (one line, 75); Ctrl-C elsewhere is 130. The
global ``--plugin MODULE`` (and ``advlora.plugins``' other sources) is imported before the command's parser is
built, so what a plugin registers is among the command's choices and in ``advlora list``.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from advlora import __version__
from advlora.cli.common import HelpFormatter
from advlora.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_PREEMPTED,
    EXIT_WRITE_FAILED,
    AdvloraError,
    WriteFailed,
    exit_codes_text,
)
from advlora.plugins import load_plugins
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
    "protocol": ("advlora.cli.protocol", "the few-shot protocols: base-to-new, cross-dataset, few-shot"),
    "ablate": ("advlora.cli.ablate", "ablate AdvLoRA's parts under one budget"),
    "analyze": ("advlora.cli.analyze", "singular spectra of weight updates and alpha statistics"),
    "bench": ("advlora.cli.bench", "efficiency ratios measured side by side"),
    "list": ("advlora.cli.listing", "list the registered attacks, models, data sets, formats, methods, objectives "
                                    "or configs"),
    "results": ("advlora.cli.results", "one table from the results files of many evaluations"),
    "leaderboard": ("advlora.cli.leaderboard", "the results files as a static, sortable web page with plots"),
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
    parser.add_argument("--plugin", action="append", metavar="MODULE",
                        help="import MODULE (a module name or a .py file) before the command: a plugin registering "
                             "families, adapter methods, objectives, attacks or formats (repeatable; also "
                             "ADVLORA_PLUGINS=a,b and the entry-point group advlora.plugins; docs/howto-plugin.md)")
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


def _command_and_plugins(argv: list[str]) -> tuple[str | None, list[str]]:
    """The command (the first word that is neither an option nor a ``--plugin``'s value) and the ``--plugin``
    modules given before it."""
    plugins, words = [], iter(argv)
    for a in words:
        if a == "--plugin":
            plugins.append(next(words, ""))
        elif a.startswith("--plugin="):
            plugins.append(a.partition("=")[2])
        elif not a.startswith("-"):
            return a, [p for p in plugins if p]
    return None, [p for p in plugins if p]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command, plugins = _command_and_plugins(argv)
    try:
        if command is not None:         # `advlora --help` imports no plugin
            load_plugins(plugins)
    except AdvloraError as e:
        print(f"advlora: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    parser, modules = build_parser(command)
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
