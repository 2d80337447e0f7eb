"""Timing and memory primitives for ``advlora bench``: medians after warm-up, and peak memory per process.

CPU peak memory is the process's peak resident set size, which never goes down; so each memory figure is
measured in a fresh child process (``run_isolated``), relative to the child's own size before the work.
glibc's malloc raises its mmap threshold (up to 32 MiB) each time a large buffer is freed, so that later
activation buffers come from the heap and stay there when freed: the resident size then counts freed memory
too (measured at ViT-B/32, batch 16: LoRA's training steps peaked at 1.44 GiB with the default allocator and at
1.02 GiB with the threshold fixed). ``release_freed_memory`` fixes the threshold so that the resident size
follows the tensors alive, as a GPU's ``max_memory_allocated`` does.
"""
from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """This process's peak resident size since it started or since ``reset_peak_rss``.

    Read from /proc (VmHWM): ``getrusage``'s ru_maxrss survives fork and execve, so a spawned child would report
    its parent's peak (a bug the first vit-b32 run hit: every child "peaked" at the parent's 4.4 GiB).
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> None:
    """Reset the peak resident size to the current one (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def release_freed_memory(threshold: int = 128 * 1024) -> bool:
    """Make glibc return every freed buffer above ``threshold`` bytes to the OS (``mallopt(M_MMAP_THRESHOLD)``,
    which also stops its dynamic raising). False where there is no glibc (the resident size then stays the
    allocator's)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        return bool(libc.mallopt(-3, int(threshold)))  # M_MMAP_THRESHOLD = -3 in malloc.h
    except (OSError, AttributeError):
        return False


def _child(conn, fn, args) -> None:
    try:
        torch.set_num_threads(max(1, torch.get_num_threads()))
        conn.send(("ok", fn(*args)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def run_isolated(fn: Callable, *args) -> Any:
    """Run ``fn(*args)`` (a module-level function) in a fresh process and return its result."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(child, fn, args))
    p.start()
    child.close()
    status, value = parent.recv()
    p.join()
    if status != "ok":
        raise RuntimeError(value)
    return value
