"""How ``evaluate_robust`` runs an image attack's batches: split across processes, resumable, with progress.

An ``EvalSession`` (made current with ``with session:``; the default one is a single process with no
state and no progress) owns the loop of every image attack (``runners.attack_images``):
- **distributed** (``distributed=True`` and ``torch.distributed`` initialised, e.g. under ``torchrun``; a
  session is never distributed by default, because a DDP training evaluates on its main process only): the
  images still to attack are
  split by index into contiguous slices, one per process (no padding, no duplicates); each process attacks
  its slice batch by batch and writes each batch's rows as a record; every process then reads all records
  (``advlora.evaluation.images.AdvImages``, row by row as needed), so everything after the attack (metrics,
  ensemble, sanity) is computed the same way as by one process. Results do not depend on the split because
  every sample's random draws are its own (``advlora.attacks.seeding``). Image features (clean and
  adversarial, ITC) are encoded by each process for its own share of the images and all-gathered
  (``encode``); BLIP's ITM re-ranking still reads every image on every process.
- **records** of every attack call: in the ``state`` folder when there is one; else in a temporary folder (per
  call in one process; one root for a distributed session, made by rank 0 and removed when the session ends,
  so the processes must share its file system: one node, or a ``state`` folder on a shared file system).
- **resumable** (``state`` folder): each finished batch's adversarial images and check flags are written
  atomically (``images.write_record``) as ``<state>/<call>-<attack>/<first index>.safetensors`` by the
  process that made them; a resumed session reads which samples they hold and attacks only the missing
  ones. ``<call>`` counts the attack calls of the evaluation in order, so the same command finds the same
  records.
- **preemption** (``stop``, an ``advlora.preempt.StopRequest``): checked after every batch (agreed between
  processes through an all-reduce); once raised, the finished batches are on disk and ``EvalPreempted``
  (an ``advlora.preempt.Preempted``: exit status 75) is raised.
- **progress**: a ``BatchProgress`` per attack call, on the main process only, named by the call's key and,
  inside ``labelled(text)``, by what the call is for (``apgd (sanity check: steps x2)``).
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from advlora.errors import AdvloraError
from advlora.evaluation.images import AdvImages, ImageSource, SubsetImages, read_index, write_record
from advlora.evaluation.progress import BatchProgress
from advlora.io import atomic_write_bytes
from advlora.preempt import PREEMPTED_EXIT, Preempted, StopRequest
from advlora.runtime import resolve_device

_CURRENT: contextvars.ContextVar[EvalSession | None] = contextvars.ContextVar("advlora_eval_session", default=None)
#: what the attack calls made now are for, shown beside their key in the progress (``labelled``)
_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("advlora_eval_label", default="")

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
        self._spill_root: Path | None = None
        self._spill_tmp: tempfile.TemporaryDirectory | None = None

    # -- context -------------------------------------------------------------------------------------------
    def __enter__(self) -> EvalSession:
        self._open()
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        _CURRENT.reset(self._token)
        if self._spill_tmp is not None or self._spill_root is not None:
            if exc_type is None:
                self.barrier()          # the other processes have read their last row
            self._spill_root = self._spill_tmp = None

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
    def _save(self, folder: Path, idx: torch.Tensor, rows: torch.Tensor, ok_mode: bool, ok_range: bool) -> None:
        write_record(folder, idx, rows, ok_mode, ok_range)

    def _folder(self, key: str) -> tuple[Path, object]:
        """Where this call's records go, and the object owning that folder: ``<state>/<call>-<key>``; else a
        temporary folder, per call in one process (removed with its images), or under one temporary root that
        rank 0 creates for the whole distributed session (removed when the session ends)."""
        name = f"{self.calls:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)}"
        if self.state is not None:
            return self.state / name, None
        rank, size = self.world()
        if size == 1:
            tmp = tempfile.TemporaryDirectory(prefix="advlora-adv-")
            return Path(tmp.name) / name, tmp
        if self._spill_root is None:
            if rank == 0:
                self._spill_tmp = tempfile.TemporaryDirectory(prefix="advlora-adv-")
            path = [self._spill_tmp.name if rank == 0 else None]
            torch.distributed.broadcast_object_list(path, src=0)
            self._spill_root = Path(path[0])
            if not self._spill_root.is_dir():
                raise AdvloraError(f"process {rank} cannot see {self._spill_root}, the adversarial images of "
                                   "process 0: on several nodes, give the session a state folder on a shared "
                                   "file system (advlora eval --out)")
        return self._spill_root / name, self._spill_tmp

    def scratch_folder(self, key: str) -> tuple[Path, object]:
        """A folder beside the attack calls' records for other per-sample rows (a suite's kept images), named
        from the calls so far and ``key``, and the object owning it (as the records' folders)."""
        return self._folder(key)

    def skip_call(self) -> None:
        """Count an attack call that a resumed evaluation does not repeat (later calls keep their folders)."""
        self.calls += 1

    def attack(self, key: str, images: ImageSource, batch_size: int, fn: BatchFn
               ) -> tuple[AdvImages, bool, bool]:
        """Run ``fn`` over every image index not already done, in batches of ``batch_size`` (this process's
        share), writing each batch's rows as a record; returns all adversarial images (every process's records,
        read lazily: ``AdvImages``) and the two check flags over every batch of every process."""
        self.calls += 1
        rank, size = self.world()
        n, item = len(images), images.item_shape
        folder, keep = self._folder(key)
        done = torch.zeros(n, dtype=torch.bool)
        flags = [True, True]
        if self.state is not None and self.resume:
            for _, idx, m, r in read_index(folder, n, item):
                done[idx] = True
                flags = [flags[0] and m, flags[1] and r]
        todo = (~done).nonzero().squeeze(1)
        mine = shard(todo, rank, size)
        per_rank = -(-len(todo) // size)
        steps = -(-per_rank // batch_size) if per_rank else 0     # the same count on every process
        done_before = -(-int(done.sum()) // batch_size)
        bar = BatchProgress(f"{key} ({_LABEL.get()})" if _LABEL.get() else key, done_before + steps,
                            mode=self.progress if rank == 0 else "off",
                            initial=done_before)
        try:
            for i in range(steps):
                idx = mine[i * batch_size:(i + 1) * batch_size]
                if len(idx):
                    rows, m, r = fn(idx)
                    flags = [flags[0] and m, flags[1] and r]
                    self._save(folder, idx, rows, m, r)
                    self.batches_run += 1
                bar.update()
                self._check_stop()
        finally:
            bar.close()
        if size > 1:   # every process enters this all-reduce after writing its last record
            d = torch.distributed
            f = torch.tensor([int(flags[0]), int(flags[1])], device=_device_of_group())
            d.all_reduce(f, op=d.ReduceOp.MIN)
            flags = [bool(f[0]), bool(f[1])]
        self.restored += int(done.sum())
        return AdvImages(folder, n, item, keep=keep), flags[0], flags[1]

    def encode(self, encode: Callable[[ImageSource], torch.Tensor], images: ImageSource) -> torch.Tensor:
        """``encode(images)`` -> (N, D) features, each process of a distributed session encoding only its own
        contiguous share of the rows (``shard``) and the features all-gathered, in index order."""
        rank, size = self.world()
        if size == 1:
            return encode(images)
        n = len(images)
        bounds = [(r * n // size, (r + 1) * n // size) for r in range(size)]
        lo, hi = bounds[rank]
        local = encode(SubsetImages(images, torch.arange(lo, hi)))
        d = torch.distributed
        dev = _device_of_group()
        width = torch.tensor([local.shape[-1] if local.dim() == 2 and len(local) else 0], device=dev)
        d.all_reduce(width, op=d.ReduceOp.MAX)
        rows = max(b - a for a, b in bounds)
        buf = torch.zeros(rows, int(width), dtype=torch.float32, device=dev)
        if hi > lo:
            buf[:hi - lo] = local.to(buf)
        parts = [torch.empty_like(buf) for _ in range(size)]
        d.all_gather(parts, buf)
        out = torch.cat([p[:b - a] for p, (a, b) in zip(parts, bounds)])
        return out.to(local.device if local.numel() else out.device, local.dtype if local.numel() else out.dtype)

    def barrier(self) -> None:
        """Wait for every process of a distributed session (no-op otherwise): no process goes on to remove or
        replace a folder another one still reads."""
        if self.world()[1] > 1:
            torch.distributed.barrier()

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


@contextlib.contextmanager
def labelled(text: str):
    """Inside, every attack call's progress names ``text`` beside its key: the sanity checks' re-runs and a
    reference attack are told apart from the attacks the results report."""
    token = _LABEL.set(text)
    try:
        yield
    finally:
        _LABEL.reset(token)


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
