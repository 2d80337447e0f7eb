"""advlora: adversarially robust low-rank adaptation (AdvLoRA) of vision-language models.

The public API follows the data flow: data -> model -> adapter -> attack -> training -> evaluation -> report.
Names are imported lazily so that ``import advlora`` stays fast.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

if sys.flags.optimize >= 2:   # python -OO: transformers' docstring decorator needs a pass-through
    from advlora.runtime import tolerate_stripped_docstrings

    tolerate_stripped_docstrings()

_API = {
    "load_dataset": "advlora.data",
    "RetrievalDataset": "advlora.data",
    "load_model": "advlora.models",  # tiny-* are pre-trained on first use (advlora.models.family's builder)
    "save_model": "advlora.models",
    "VLModel": "advlora.models",
    "attach_adapter": "advlora.adapters",
    "save_adapter": "advlora.adapters",
    "load_adapter": "advlora.adapters",
    "merge_adapter": "advlora.adapters",
    "retrieval_recall": "advlora.metrics",
    "evaluate_clean": "advlora.evaluation",
    "evaluate_sweep": "advlora.evaluation.sweep",
    "SweepSettings": "advlora.evaluation.sweep",
    "ClassificationDataset": "advlora.data.classification",
    "AdvloraError": "advlora.errors",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    if name in ("attacks", "metrics", "data", "models", "adapters", "training", "evaluation", "report"):
        return importlib.import_module(f"advlora.{name}")
    raise AttributeError(f"module 'advlora' has no attribute {name!r}")
