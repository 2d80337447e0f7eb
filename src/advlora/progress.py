"""Progress of long work, in batches or samples: a tqdm bar (with its ETA) when stderr is a terminal, otherwise
one log line every ``interval`` seconds (``pgd: batch 3/40, 12s elapsed, ETA 2m28s``), so that a batch job's log
shows where it is. Stage 0, so that every stage can report: the evaluation's attacks (``advlora.evaluation``
re-exports it as ``evaluation.progress``) and ``advlora data shard``'s writing."""
from __future__ import annotations

import sys
import threading
import time
import weakref
from typing import TextIO

#: seconds between two log lines when stderr is not a terminal
LOG_INTERVAL = 30.0
#: the modes of ``BatchProgress`` (and of every command's ``--progress``)
PROGRESS = ("auto", "bar", "log", "off")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class BatchProgress:
    """``update()`` after each of ``total`` units of work ``desc``; ``close()`` at the end.

    ``mode``: "bar" (tqdm), "log" (a line every ``interval`` s, default ``LOG_INTERVAL`` read when the progress
    starts, also while one long unit runs, so that the log never goes silent; and one at the end unless the last
    line already said it) or "off"; "auto" picks the bar on a terminal, else the log. ``initial`` units were
    done before (a resumed evaluation). ``unit`` names what is counted ("batch", "image").
    """

    def __init__(self, desc: str, total: int, *, mode: str = "auto", initial: int = 0,
                 interval: float | None = None, stream: TextIO | None = None, unit: str = "batch") -> None:
        self.desc, self.total, self.done, self.unit = desc, total, initial, unit
        self.interval = LOG_INTERVAL if interval is None else interval
        self.stream = sys.stderr if stream is None else stream
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "log"
        if mode not in PROGRESS[1:]:
            raise ValueError(f"progress mode must be auto, bar, log or off; got {mode!r}")
        self.mode, self._start, self._initial = mode, time.monotonic(), initial
        self._last, self._printed, self.note = self._start, -1, ""
        self._bar, self._lock, self._stop, self._beat = None, threading.Lock(), threading.Event(), None
        if mode == "log" and self.interval > 0 and total > initial:
            self._beat = threading.Thread(target=_heartbeat, args=(weakref.ref(self), self._stop, self.interval),
                                          name=f"progress {desc}", daemon=True)
            self._beat.start()
        if mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, leave=False,
                             dynamic_ncols=True)

    def line(self) -> str:
        """``pgd: batch 3/40, 12s elapsed, ETA 2m28s`` (the ETA from this run's units only)."""
        elapsed = time.monotonic() - self._start
        fresh = self.done - self._initial
        eta = elapsed / fresh * (self.total - self.done) if fresh > 0 else None
        return (f"{self.desc}: {self.unit} {self.done}/{self.total}, {_clock(elapsed)} elapsed, "
                f"ETA {_clock(eta) if eta is not None else '?'}" + (f", {self.note}" if self.note else ""))

    def set_note(self, **values: str) -> None:
        """What the work reports beside its count (``loss=0.412``): the bar's postfix, the end of each log line."""
        self.note = ", ".join(f"{k} {v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log":
            if time.monotonic() - self._last >= self.interval:
                self._print()

    def close(self) -> None:
        if self._beat is not None:
            self._stop.set()
            self._beat.join()
        if self._bar is not None:
            self._bar.close()
        elif (self.mode == "log" and self.total and self._printed != self.done
              and time.monotonic() - self._start >= min(self.interval, 5.0)):
            self._print()   # the end of work that took a while, unless the last line said it

    def _print(self) -> None:
        with self._lock:
            self._last, self._printed = time.monotonic(), self.done
            print(self.line(), file=self.stream, flush=True)


def _heartbeat(ref: weakref.ref, stop: threading.Event, interval: float) -> None:
    """A log line whenever ``interval`` s pass without one, so that a unit of work that takes minutes (Square's
    queries on one batch) shows that it runs; ends at ``close()``, or once the progress is gone (work that
    raised before closing it)."""
    while not stop.wait(interval / 4):
        progress = ref()
        if progress is None:
            return
        if time.monotonic() - progress._last >= interval:
            progress._print()
        del progress


__all__ = ["BatchProgress", "LOG_INTERVAL", "PROGRESS"]
