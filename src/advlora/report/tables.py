"""Plain-text and markdown tables of retrieval metrics."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from advlora.metrics import METRIC_KEYS


def metrics_table(rows: Mapping[str, Mapping[str, float]] | Sequence[tuple[str, Mapping[str, float]]],
                  columns: Sequence[str] = METRIC_KEYS, markdown: bool = False, first: str = "") -> str:
    """One row per entry of ``rows`` (name -> metrics, or (name, metrics) pairs, where a name may repeat), one
    column per key; numbers with one decimal."""
    header = [first, *columns]
    pairs = rows.items() if isinstance(rows, Mapping) else rows
    body = [[name, *[_fmt(m.get(c)) for c in columns]] for name, m in pairs]
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    if markdown:
        lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
                 "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in body]
    else:
        lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
        lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  for r in body]
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)
