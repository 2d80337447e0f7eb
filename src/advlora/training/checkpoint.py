"""Checkpoints: atomic folders ``checkpoints/step-000050/`` holding everything an exact resume needs.

A checkpoint folder holds
- ``trainable.safetensors``: every trainable tensor of the model, bit for bit;
- ``adapter/``: the adapter in peft's format (``advlora.adapters.save_adapter``), for users;
- ``state.pt``: optimiser, scheduler, step, data position, and the RNG states of torch, numpy, python and the
  trainer's own generators (read back with ``torch.load(weights_only=True)``).
It is written under a temporary name and renamed into place; only the last ``keep`` are kept.
"""
from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advlora.errors import AdvloraError
from advlora.io import atomic_dir

_NAME = re.compile(r"^step-(\d+)$")


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """RNG states as tensors and plain Python values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                                                       "pos": int(pos), "has_gauss": int(has_gauss),
                                                       "cached": float(cached)},
             "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
             "generators": {k: g.get_state() for k, g in generators.items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    for k, g in generators.items():
        g.set_state(state["generators"][k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
    if missing or any(n not in params for n in tensors):
        raise AdvloraError(f"checkpoint does not fit the model ({len(missing)} trainable tensors missing)")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t)


def save_checkpoint(folder: Path, step: int, model: torch.nn.Module, state: dict[str, Any], keep: int,
                    save_adapter=None) -> Path:
    """Write ``folder/step-<step>`` atomically, then delete all but the newest ``keep`` checkpoints."""
    from safetensors.torch import save_file

    target = folder / f"step-{step:06d}"
    with atomic_dir(target) as tmp:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(state, tmp / "state.pt")
        if save_adapter is not None:
            save_adapter(tmp / "adapter")
    for old in list_checkpoints(folder)[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints under ``folder``, oldest first (temporary folders of a killed run are removed)."""
    if not folder.is_dir():
        return []
    for p in folder.iterdir():
        if p.name.startswith(".") and ".tmp-" in p.name:
            shutil.rmtree(p, ignore_errors=True)
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load the trainable tensors into ``model``; return the state dict (optimiser, scheduler, RNG, step)."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path / "trainable.safetensors"))
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise AdvloraError(f"{path}: unreadable checkpoint ({str(e).splitlines()[0]})") from None
    load_trainable(model, tensors)
    return state


__all__ = ["list_checkpoints", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state",
           "trainable_state"]
