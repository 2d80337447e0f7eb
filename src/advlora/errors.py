"""The one exception type users see, and the exit statuses every command follows.

An ``AdvloraError`` is a single line naming the value or file and what is wrong; the CLI prints it on stderr
and exits with ``EXIT_BAD_INPUT``, with no traceback. ``EXIT_CODES`` is the one table of exit statuses
(docs/cli.md, "Exit status", shows it); every command returns one of them.
"""
from __future__ import annotations

#: the command did what was asked
EXIT_OK = 0
#: a check ran and found problems (``advlora data check`` on a data set with missing or unreadable files)
EXIT_PROBLEMS = 1
#: bad input: an unknown option or name, a malformed value, a missing or unreadable file (nothing was run)
EXIT_BAD_INPUT = 2
#: a file could not be written (disk full, no permission); what was written before is intact (``EX_IOERR``)
EXIT_WRITE_FAILED = 74
#: stopped by a preemption signal or Ctrl-C after saving its state; ``--resume`` continues (``EX_TEMPFAIL``)
EXIT_PREEMPTED = 75
#: interrupted at once by Ctrl-C (SIGINT), 128 + 2 as shells report it
EXIT_INTERRUPTED = 130

#: exit status -> what it means: the table ``advlora --help`` and docs/cli.md show
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_PROBLEMS: "a check ran and found problems (advlora data check)",
    EXIT_BAD_INPUT: "bad input: unknown option or name, malformed value, missing file; nothing was run",
    EXIT_WRITE_FAILED: "a file could not be written (disk full, no permission); earlier files and checkpoints kept",
    EXIT_PREEMPTED: "stopped by a signal (SIGTERM, SIGUSR1, SIGUSR2, Ctrl-C) after saving; rerun with --resume",
    EXIT_INTERRUPTED: "interrupted at once (a second Ctrl-C, or Ctrl-C outside a training or attacked evaluation)",
}


class AdvloraError(Exception):
    """Bad input from the user (file, value, option): reported as one line, exit status ``EXIT_BAD_INPUT``."""


class WriteFailed(AdvloraError):
    """A file or folder could not be written (disk full, permissions): one line, exit status ``EXIT_WRITE_FAILED``;
    the files written before it (the previous checkpoint) are left as they were."""


def choices_error(kind: str, value: object, valid: object) -> AdvloraError:
    """An error for an unknown name that lists the valid ones, e.g. ``unknown attack 'pdg' (valid: fgsm, pgd)``."""
    return AdvloraError(f"unknown {kind} {value!r} (valid: {', '.join(sorted(map(str, valid)))})")


def exit_codes_text() -> str:
    """The exit-status table as help text, one status a line."""
    return "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
