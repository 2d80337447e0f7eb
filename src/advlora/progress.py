"""Progress of long work, in batches or samples: a tqdm bar (with its ETA) when stderr is a terminal, otherwise
one log line every ``interval`` seconds (``pgd: batch 3/40, 12s elapsed, ETA 2m28s``), so that a batch job's log
shows where it is. Stage 0, so that every stage can report: the evaluation's attacks (``advlora.evaluation``
re-exports it as ``evaluation.progress``) and ``advlora data shard``'s writing."""
from __future__ import annotations

import sys
import time
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
    starts, and one at the end) or "off"; "auto" picks the bar on a terminal, else the log. ``initial`` units were
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
        self._last = self._start
        self._bar = None
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
                f"ETA {_clock(eta) if eta is not None else '?'}")

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log":
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log" and self.total and time.monotonic() - self._start >= min(self.interval, 5.0):
            print(self.line(), file=self.stream, flush=True)   # the end of work that took a while


__all__ = ["BatchProgress", "LOG_INTERVAL", "PROGRESS"]
