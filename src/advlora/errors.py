"""The one exception type users see: a single line naming the value or file and what is wrong.

The CLI turns an ``AdvloraError`` into that line on stderr and exit status 2, with no traceback.
"""
from __future__ import annotations


class AdvloraError(Exception):
    """Bad input from the user (file, value, option): reported as one line, exit status 2."""


def choices_error(kind: str, value: object, valid: object) -> AdvloraError:
    """An error for an unknown name that lists the valid ones, e.g. ``unknown attack 'pdg' (valid: fgsm, pgd)``."""
    return AdvloraError(f"unknown {kind} {value!r} (valid: {', '.join(sorted(map(str, valid)))})")
