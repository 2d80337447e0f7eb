"""Progress of long evaluation work: ``advlora.progress.BatchProgress`` (a tqdm bar over an attack's batches on a
terminal, else a log line every 30 s), defined in stage 0 so that ``advlora data shard`` shows it too, and
importable from here. Only the main process of a distributed run reports."""
from __future__ import annotations

from advlora.progress import LOG_INTERVAL, BatchProgress

__all__ = ["BatchProgress", "LOG_INTERVAL"]
