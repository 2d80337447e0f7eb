"""How ``evaluate_robust`` runs an image attack's batches: split across processes, resumable, with progress.

An ``EvalSession`` (made current with ``with session:``; the default one is a single process with no
state and no progress) owns the loop of every image attack (``robust._attack_images``):
- **distributed** (``distributed=True`` and ``torch.distributed`` initialised, e.g. under ``torchrun``; a
  session is never distributed by default, because a DDP training evaluates on its main process only): the images still to attack are
  split by index into contiguous slices, one per process (no padding, no duplicates); each process attacks
  its slice batch by batch; an all-reduce (sum over rows that are zero on every other process: exact) gives
  every process all adversarial images, so everything after it (metrics, ensemble, sanity) is computed the
  same way as by one process. Results do not depend on the split because every sample's random draws are
  its own (``advlora.attacks.seeding``). Clean features are computed by every process (not sharded).
- **resumable** (``state`` folder): each finished batch's adversarial images and check flags are written
  atomically as ``<state>/<call>-<attack>/<first index>.safetensors`` by the process that made them; a
  resumed session reads them back and attacks only the missing samples. ``<call>`` counts the attack calls
  of the evaluation in order, so the same command finds the same records.
- **preemption** (``stop``, an ``advlora.preempt.StopRequest``): checked after every batch (agreed between
  processes through an all-reduce); once raised, the finished batches are on disk and ``EvalPreempted``
  (an ``advlora.preempt.Preempted``: exit status 75) is raised.
- **progress**: a ``BatchProgress`` per attack call, on the main process only.
"""
from __future__ import annotations

import contextvars
import json
import os
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import torch

from advlora.errors import AdvloraError
from advlora.evaluation.progress import BatchProgress
from advlora.io import atomic_write_bytes
from advlora.preempt import PREEMPTED_EXIT, Preempted, StopRequest
from advlora.runtime import resolve_device

_CURRENT: contextvars.ContextVar[EvalSession | None] = contextvars.ContextVar("advlora_eval_session", default=None)

#: a batch function: global indices (B,) -> (adversarial images (B, ...), eval mode held, inputs in [0, 1])
BatchFn = Callable[[torch.Tensor], tuple[torch.Tensor, bool, bool]]


class EvalPreempted(Preempted):
    """Raised once a stop signal's batch is saved; ``advlora eval --resume --out SAME`` continues."""

    def __init__(self, signum: int, batches: int, state: str) -> None:
        super().__init__(signum, batches, state)
        Exception.__init__(self, f"stopped by {signal.Signals(signum).name} after {batches} batches of this run; "
                                 f"finished batches saved in {state} (continue with --resume and the same --out; "
                                 f"exit status {PREEMPTED_EXIT})")


def _dist():
    d = torch.distributed
    return d if d.is_available() and d.is_initialized() else None


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) without ``torch.distributed``."""
    d = _dist()
    return (d.get_rank(), d.get_world_size()) if d is not None else (0, 1)


def shard(indices: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """The contiguous slice of ``indices`` that process ``rank`` of ``size`` takes (sizes differ by at most 1)."""
    n = len(indices)
    lo, hi = rank * n // size, (rank + 1) * n // size
    return indices[lo:hi]


class EvalSession:
    """See the module docstring. ``state``: folder of finished batches (None: not resumable); ``resume``: read
    the records already there (else the folder is emptied first); ``fingerprint``: what the records were made
    with (a resumed session with another one is refused); ``progress``: ``BatchProgress`` mode;
    ``distributed``: split the work across the processes of ``torch.distributed`` (every process must then run
    the same evaluation)."""

    def __init__(self, *, state: str | Path | None = None, resume: bool = False, stop: StopRequest | None = None,
                 progress: str = "off", fingerprint: dict | None = None, distributed: bool = False) -> None:
        self.distributed = distributed
        self.state = None if state is None else Path(state)
        self.resume, self.stop, self.progress = resume, stop, progress
        self.fingerprint = fingerprint or {}
        self.calls = 0
        self.batches_run = 0
        self.restored = 0
        self._token = None
        self._opened = False

    # -- context -------------------------------------------------------------------------------------------
    def __enter__(self) -> EvalSession:
        self._open()
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _CURRENT.reset(self._token)

    def _open(self) -> None:
        if self._opened or self.state is None:
            return
        self._opened = True
        rank, size = self.world()
        info = self.state / "session.json"
        if rank == 0:
            if self.resume and info.exists():
                saved = json.loads(info.read_text())
                if saved != self.fingerprint:
                    diff = sorted(k for k in {*saved, *self.fingerprint} if saved.get(k) != self.fingerprint.get(k))
                    raise AdvloraError(f"--resume: the saved evaluation in {self.state} was made with other "
                                       f"settings ({', '.join(diff)}); run without --resume to start over")
            elif self.state.exists():
                shutil.rmtree(self.state)
            atomic_write_bytes(info, json.dumps(self.fingerprint, sort_keys=True).encode())
        if size > 1:
            torch.distributed.barrier()

    def world(self) -> tuple[int, int]:
        """(rank, world size) this session splits over: (0, 1) unless it is ``distributed``."""
        return world() if self.distributed else (0, 1)

    # -- the attack loop -----------------------------------------------------------------------------------
    def _records(self, folder: Path, n: int, like: torch.Tensor):
        from safetensors.torch import load_file

        for f in sorted(folder.glob("*.safetensors")) if folder.exists() else ():
            rec = load_file(str(f))
            idx = rec["indices"].long()
            if len(idx) and (int(idx.max()) >= n or rec["adv"].shape[1:] != like.shape[1:]):
                raise AdvloraError(f"--resume: {f} does not belong to this evaluation (other images); "
                                   "run without --resume to start over")
            yield idx, rec["adv"].to(like.dtype), bool(rec["flags"][0]), bool(rec["flags"][1])

    def _save(self, folder: Path, idx: torch.Tensor, rows: torch.Tensor, ok_mode: bool, ok_range: bool) -> None:
        from safetensors.torch import save

        data = save({"indices": idx.cpu().contiguous(), "adv": rows.detach().cpu().contiguous(),
                     "flags": torch.tensor([ok_mode, ok_range], dtype=torch.uint8)})
        atomic_write_bytes(folder / f"{int(idx[0]):09d}.safetensors", data)

    def attack(self, key: str, images: torch.Tensor, batch_size: int, fn: BatchFn
               ) -> tuple[torch.Tensor, bool, bool]:
        """Run ``fn`` over every image index not already done, in batches of ``batch_size`` (this process's
        share); returns all adversarial images (like ``images``, on its device) and the two check flags over
        every batch of every process."""
        self.calls += 1
        rank, size = self.world()
        n = len(images)
        adv = torch.zeros_like(images)
        done = torch.zeros(n, dtype=torch.bool)
        flags = [True, True]
        folder = None
        if self.state is not None:
            folder = self.state / f"{self.calls:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)}"
            if self.resume:
                for idx, rows, m, r in self._records(folder, n, images):
                    adv[idx] = rows.to(adv.device)
                    done[idx] = True
                    flags = [flags[0] and m, flags[1] and r]
        restored = adv.clone() if size > 1 and bool(done.any()) else None
        if restored is not None:
            adv.zero_()
        todo = (~done).nonzero().squeeze(1)
        mine = shard(todo, rank, size)
        per_rank = -(-len(todo) // size)
        steps = -(-per_rank // batch_size) if per_rank else 0     # the same count on every process
        done_before = -(-int(done.sum()) // batch_size)
        bar = BatchProgress(key, done_before + steps, mode=self.progress if rank == 0 else "off",
                            initial=done_before)
        try:
            for i in range(steps):
                idx = mine[i * batch_size:(i + 1) * batch_size]
                if len(idx):
                    rows, m, r = fn(idx)
                    adv[idx] = rows.to(adv)
                    flags = [flags[0] and m, flags[1] and r]
                    if folder is not None:
                        self._save(folder, idx, rows, m, r)
                    self.batches_run += 1
                bar.update()
                self._check_stop()
        finally:
            bar.close()
        if size > 1:
            d = torch.distributed
            buf = adv.to(_device_of_group())
            d.all_reduce(buf, op=d.ReduceOp.SUM)        # each row is non-zero on at most one process
            adv = buf.to(images.device)
            if restored is not None:
                adv[done] = restored[done]
            f = torch.tensor([int(flags[0]), int(flags[1])], device=_device_of_group())
            d.all_reduce(f, op=d.ReduceOp.MIN)
            flags = [bool(f[0]), bool(f[1])]
        self.restored += int(done.sum())
        return adv, flags[0], flags[1]

    def _check_stop(self) -> None:
        signum = self.stop.signum if self.stop is not None and self.stop else 0
        if self.world()[1] > 1:
            d = torch.distributed
            t = torch.tensor([signum or 0], device=_device_of_group())
            d.all_reduce(t, op=d.ReduceOp.MAX)
            signum = int(t[0])
        if signum:
            raise EvalPreempted(signum, self.batches_run, str(self.state))


def _device_of_group() -> torch.device:
    d = torch.distributed
    if d.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def current() -> EvalSession:
    """The session in use (``with EvalSession(...):``), else a plain one-process session."""
    s = _CURRENT.get()
    return s if s is not None else EvalSession()


def init_from_env(device: str | None) -> tuple[int, int, str | None]:
    """Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1): initialise ``torch.distributed`` (NCCL on
    CUDA, gloo on CPU) and return (rank, world size, this process's device); else (0, 1, ``device``)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1, device
    dev = str(resolve_device(device))
    d = torch.distributed
    if not d.is_initialized():
        if dev.startswith("cuda"):
            local = int(os.environ.get("LOCAL_RANK", "0"))
            dev = f"cuda:{local}"
            torch.cuda.set_device(local)
            d.init_process_group("nccl")
        else:
            d.init_process_group("gloo")
    return d.get_rank(), d.get_world_size(), dev


__all__ = ["EvalPreempted", "EvalSession", "current", "init_from_env", "shard", "world"]
