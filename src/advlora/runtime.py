"""The process-level helpers every stage shares: where to run, the eval-mode context and quiet libraries.

This module sits at the bottom of the package (it imports only torch and the standard library), so the data,
model, attack, training and evaluation stages all read one definition of each.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch


def resolve_device(device: str | torch.device | None = None) -> str:
    """``device`` as given, else ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device is not None:
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module | None) -> Iterator[torch.nn.Module | None]:
    """Eval mode inside the block (dropout off, normalisation statistics frozen); every submodule's own mode is
    restored after, whatever happens. ``None`` is accepted and left alone."""
    if model is None:
        yield None
        return
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, t in modes.items():
            m.training = t


def quiet_libraries() -> None:
    """Silence the tokenizers fork warning, accelerate's per-checkpoint info lines, and transformers' info logs
    and progress bars (best effort: a missing or changed transformers logging API leaves the output as it was)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    try:
        import transformers
    except ImportError:
        return
    with contextlib.suppress(AttributeError):
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()


__all__ = ["eval_mode", "quiet_libraries", "resolve_device"]


def tolerate_stripped_docstrings() -> None:
    """Let ``python -OO`` (docstrings stripped) import transformers' models.

    transformers' ``auto_docstring`` decorator raises while its modeling modules import when docstrings are
    stripped (transformers issues 40659 and 42279). With no docstrings there is nothing for it to write, so under
    ``-OO`` it is replaced by a pass-through before any modeling module loads; otherwise nothing changes.
    """
    if sys.flags.optimize < 2:
        return
    import transformers.utils  # noqa: F401  (loads the decorator's module)

    def passthrough(obj: Any = None, **_: Any) -> Any:
        return (lambda o: o) if obj is None else obj

    sys.modules["transformers.utils"].auto_docstring = passthrough
    sys.modules["transformers.utils.auto_docstring"].auto_docstring = passthrough
