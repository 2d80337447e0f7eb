"""Checkpoints through accelerate's state saving, in atomic folders ``checkpoints/step-000050/``.

``Checkpoints`` registers hooks with the run's ``Accelerator`` (the optimiser is accelerate's through
``prepare``): they write and read only the trainable tensors (the frozen base is the model's, not the run's) and
the objects given (the learning-rate schedule, the trainer's counters and generators). ``Accelerator.save_state``
then writes, into one folder,
- ``trainable.safetensors``: every trainable tensor of the model, bit for bit (the save hook);
- ``objects.pt``: the objects' state dicts (tensors, numbers, strings), read back with
  ``torch.load(weights_only=True)``: accelerate's own ``register_for_checkpointing`` reads its
  ``custom_checkpoint_*.pkl`` files with ``weights_only=False``, i.e. unpickles them, which a checkpoint from
  someone else must never be;
- ``optimizer.bin``, ``random_states_0.pkl`` (python, numpy, torch and CUDA RNGs): accelerate's files, read back
  by ``Accelerator.load_state`` (with ``weights_only=True`` and its allow-list of RNG state types);
- ``adapter/``: the adapter in peft's format (``advlora.adapters.save_adapter``), for users.
The folder is written under a temporary name and renamed into place, so a run killed mid-save leaves the previous
checkpoint as the newest; only the last ``keep`` are kept. (accelerate's ``automatic_checkpoint_naming`` writes
``checkpoint_<n>`` in place, which a kill can leave half written, and names folders by save count, not by step:
see docs/training.md.) Only the main process saves; every process loads. The trainer reseeds its generators from
(seed, step, rank) each step, so the other ranks' RNG states need no saving.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from advlora.errors import AdvloraError, WriteFailed
from advlora.io import atomic_dir

_PREFIX = "step-"
WEIGHTS = "trainable.safetensors"
OBJECTS = "objects.pt"


class TrainerState:
    """The trainer's counters (a dict it updates in place) and its generators, as a checkpointed object."""

    def __init__(self, state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
        self.state, self.generators = state, generators

    def state_dict(self) -> dict[str, Any]:
        return {**self.state, "generators": {k: g.get_state() for k, g in self.generators.items()}}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        for k, g in self.generators.items():
            g.set_state(saved["generators"][k])
        self.state.update({k: saved[k] for k in self.state})


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


class Checkpoints:
    """Save and load the run's checkpoints under ``folder`` with ``accelerator``'s state saving.

    Args:
        model: the model whose trainable tensors are saved (the base model, so names do not depend on wrappers).
        objects: further objects with ``state_dict`` / ``load_state_dict`` (the schedule, ``TrainerState``).
        save_adapter: writes the adapter in peft's format into a folder (None: no ``adapter/``).
    """

    def __init__(self, accelerator, folder: Path, model: torch.nn.Module, objects: list[Any], keep: int,
                 save_adapter: Callable[[Path], Any] | None = None) -> None:
        self.acc, self.folder, self.model = accelerator, folder, model
        self.keep, self.save_adapter = keep, save_adapter
        self.objects = list(objects)
        accelerator.register_save_state_pre_hook(self._save_weights)
        accelerator.register_load_state_pre_hook(self._load_weights)

    def _save_weights(self, models: list, weights: list, output_dir: str) -> None:
        save_file(trainable_state(self.model), str(Path(output_dir) / WEIGHTS))
        torch.save([obj.state_dict() for obj in self.objects], Path(output_dir) / OBJECTS)
        weights.clear()  # accelerate would write the whole model beside them

    def _load_weights(self, models: list, input_dir: str) -> None:
        try:
            tensors = load_file(str(Path(input_dir) / WEIGHTS))
            states = torch.load(Path(input_dir) / OBJECTS, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as e:
            raise AdvloraError(f"{input_dir}: unreadable checkpoint ({str(e).splitlines()[0]})") from None
        if len(states) != len(self.objects):
            raise AdvloraError(f"{input_dir}: checkpoint holds {len(states)} objects, the run has {len(self.objects)}")
        load_trainable(self.model, tensors)
        for obj, state in zip(self.objects, states):
            obj.load_state_dict(state)
        models.clear()  # loaded here, not by accelerate

    def path(self, step: int) -> Path:
        """The folder of the checkpoint at ``step``."""
        return self.folder / f"{_PREFIX}{step:06d}"

    def save(self, step: int) -> Path:
        """Write ``step-<step>`` atomically (main process only), then delete all but the newest ``keep``. A write
        that fails (a full disk: safetensors, torch and accelerate each raise their own exception) is one
        ``WriteFailed`` line, with the earlier checkpoints left as they were."""
        target = self.path(step)
        try:
            with atomic_dir(target) as tmp:
                self.acc.save_state(str(tmp))
                if self.save_adapter is not None:
                    self.save_adapter(tmp / "adapter")
        except Exception as e:  # noqa: BLE001 - any failed write is reported the same way
            kept = list_checkpoints(self.folder)
            last = f"the last checkpoint, {kept[-1]}, is intact" if kept else "no earlier checkpoint exists"
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise WriteFailed(f"cannot write checkpoint {target} ({why}); {last}") from None
        for old in list_checkpoints(self.folder)[:-max(1, self.keep)]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def load(self, path: Path) -> None:
        """Restore the model's trainable tensors, the optimiser, the RNGs and the registered objects."""
        try:
            self.acc.load_state(str(path))
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise AdvloraError(f"{path}: unreadable checkpoint ({str(e).splitlines()[0]})") from None


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints under ``folder``, oldest first (temporary folders of a killed run are removed)."""
    if not folder.is_dir():
        return []
    for p in folder.iterdir():
        if p.name.startswith(".") and ".tmp-" in p.name:
            shutil.rmtree(p, ignore_errors=True)
    found = [(int(p.name[len(_PREFIX):]), p) for p in folder.iterdir()
             if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX):].isdigit()]
    return [p for _, p in sorted(found)]


__all__ = ["Checkpoints", "TrainerState", "list_checkpoints", "load_trainable", "trainable_state"]
