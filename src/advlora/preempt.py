"""Preemption: a training told to stop by a signal finishes its step, checkpoints it, and exits with a code.

Ctrl-C (SIGINT) is such a signal too: the first one stops the training after its step's checkpoint as SIGTERM
does (one line on stderr says so), a second one interrupts at once (``KeyboardInterrupt``, exit status 130).

Clusters stop jobs with a signal and kill them shortly after: SLURM sends SIGTERM on preemption, or the signal
given with ``sbatch --signal`` (submitit asks for SIGUSR2 before the time limit). While ``stop_requests()`` is
active, SIGTERM, SIGUSR1, SIGUSR2 and SIGINT only set a flag; the trainer checks it after each step, writes a
checkpoint at that step and raises ``Preempted``. ``advlora train`` then exits with ``PREEMPTED_EXIT`` (75,
``EX_TEMPFAIL`` of sysexits.h: "try again later"), and ``advlora train --resume`` continues bit-identically. A SLURM
site requeues such jobs with ``RequeueExit=75`` in slurm.conf, an sbatch script with ``scontrol requeue`` when it sees
75 (docs/cluster.md), submitit through ``advlora.experiments.cluster``. This module imports no torch, so the CLI
can map the exception to its exit code without loading the trainer.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from advlora.errors import EXIT_PREEMPTED

#: exit status of a command stopped by a preemption signal after writing its checkpoint (``advlora.errors``)
PREEMPTED_EXIT = EXIT_PREEMPTED
#: the signals that ask a training to stop at the end of its step
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)


class Preempted(Exception):
    """Raised by the trainer once a stop signal's step is checkpointed."""

    def __init__(self, signum: int, step: int, checkpoint: str) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint {checkpoint} "
                         f"(continue with --resume; exit status {PREEMPTED_EXIT})")


class StopRequest:
    """The signal received while ``stop_requests()`` was active (None: none yet)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:  # noqa: ARG002 - signal handler signature
        if signum == signal.SIGINT:
            if self.signum == signal.SIGINT:
                raise KeyboardInterrupt
            # os.write: print() inside a signal handler can meet a stream already being written
            os.write(2, b"advlora: Ctrl-C: stopping once the current step or batch is saved (Ctrl-C again: stop "
                        b"at once, unsaved)\n")
        self.signum = signum


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Turn ``SIGNALS`` into a flag for the duration (their previous handlers come back after). Outside the main
    thread, where Python cannot install handlers, the flag simply never rises."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request._handle) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


__all__ = ["PREEMPTED_EXIT", "Preempted", "SIGNALS", "StopRequest", "stop_requests"]
