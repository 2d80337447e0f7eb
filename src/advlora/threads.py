"""How many intra-op threads torch should use here: the cores that other processes leave free.

On an idle machine every core helps; on a busy one OpenMP's spinning threads fight the other processes and a run
becomes slower than on one thread (docs/performance.md, "Threads"). ``auto_threads`` samples the machine's busy
time for a fraction of a second (``/proc/stat``; the calling process is asleep meanwhile, so only other processes
count; elsewhere the 1-minute load average), so it sees processes already running, not ones starting at the same
moment (``advlora grid --jobs`` gives its workers one share each instead).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [float(x) for x in f.readline().split()[1:9]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


def busy_cores(window: float = 0.3) -> float:
    """Cores kept busy by other processes, measured over ``window`` seconds while this one sleeps."""
    import time

    try:
        b0, t0 = _cpu_times()
        time.sleep(window)
        b1, t1 = _cpu_times()
        n = os.cpu_count() or 1
        return n * (b1 - b0) / max(t1 - t0, 1e-9)
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0


def auto_threads(busy: float | None = None) -> int:
    """Cores left free by other processes (``busy``: their load in cores; default measured now), >= 1."""
    busy = busy_cores() if busy is None else busy
    return max(1, min(cores(), cores() - int(busy + 0.5)))


def default_jobs() -> int:
    """Worker processes for independent experiment cells: one per core on CPU (at most 4), one with a GPU."""
    return 1 if torch.cuda.is_available() else max(1, min(cores(), 4))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``n`` torch threads (None or 0: ``auto_threads()``); the old count is restored."""
    old = torch.get_num_threads()
    n = int(n) if n else auto_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


__all__ = ["auto_threads", "busy_cores", "cores", "default_jobs", "torch_threads"]
