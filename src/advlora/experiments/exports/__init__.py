"""Export formats of results: each one a pure function from ``Result`` to the format's dicts and one back.

Every format declares itself in its own module of this package with ``register(Format(...))``; importing the
package imports every module of it, so a new format is one new file (``advlora results --format NAME``).
Declared: ``advlora`` (the results record itself), ``clip-benchmark`` (CLIP_benchmark's result JSON with the
keys RobustVLM's fork adds), ``robustbench`` (RobustBench's ``model_info`` JSON; classification under Linf or
L2 only) and ``csv`` (one flat row per result). docs/results-formats.md describes each one's keys.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from advlora.declarations import Declarations, import_all
from advlora.errors import AdvloraError
from advlora.experiments.results import Result


@dataclass(frozen=True)
class Format:
    """One export format's declaration.

    Attributes:
        name: the name users type (``--format robustbench``).
        export: ``(Result) -> list[dict]``: the format's documents of one result (CLIP_benchmark writes one per
            attack setting, so a result may give several).
        parse: ``(list[dict]) -> Result``: the result back from the documents ``export`` gave (the numbers and
            the threat model; fields the format has no place for come back as None).
        applies: ``(Result) -> str``: why the format cannot hold a result ("" when it can).
        path: ``(Result, dict) -> str``: the relative file path the format's own tools expect for one document.
        doc: one line on what it is and whose tools read it.
        render: ``(list[dict]) -> str``: the documents as one text file (the CSV table); None: each document is
            a JSON file.
    """

    name: str
    export: Callable[[Result], list[dict[str, Any]]]
    parse: Callable[[list[dict[str, Any]]], Result]
    applies: Callable[[Result], str]
    path: Callable[[Result, dict[str, Any]], str]
    doc: str = ""
    render: Callable[[list[dict[str, Any]]], str] | None = None


#: every declared results format (``Declarations``): ``register`` (a module of this package calls it at import),
#: ``registered`` (a throw-away format for a ``with`` block), ``get`` (an unknown name: one error line listing the
#: declared ones), ``names`` and ``unregister`` are its methods
DECLARED: Declarations[Format] = Declarations("results format")
register, unregister, registered, get, names = (DECLARED.register, DECLARED.unregister, DECLARED.registered,
                                                DECLARED.get, DECLARED.names)


def measured_only(result: Result) -> str:
    """``applies`` of a format that holds measured results only."""
    return "" if result.kind == "measured" else "a reported entry (published number) is exported only as csv"


def export_all(fmt: Format, results: list[Result]) -> tuple[list[tuple[Result, dict[str, Any]]], list[str]]:
    """(result, document) of every result ``fmt`` can hold, and one note per reason it cannot hold some (with
    their count and the first few)."""
    docs: list[tuple[Result, dict[str, Any]]] = []
    left: dict[str, list[str]] = {}
    for r in results:
        why = fmt.applies(r)
        if why:
            left.setdefault(why, []).append(
                f"{r.name()} on {r.data} ({'clean' if r.threat is None else r.threat.label()})")
            continue
        docs.extend((r, d) for d in fmt.export(r))
    notes = [f"{len(names)} not exported as {fmt.name} ({why}): {'; '.join(names[:3])}"
             f"{'; ...' if len(names) > 3 else ''}" for why, names in left.items()]
    return docs, notes


def require(doc: dict[str, Any], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in doc]
    if missing:
        raise AdvloraError(f"{what}: missing {', '.join(map(repr, missing))}")


import_all(__name__, __path__)

__all__ = ["DECLARED", "Format", "export_all", "get", "measured_only", "names", "register", "registered",
           "unregister"]
