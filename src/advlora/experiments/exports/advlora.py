"""``advlora``: the results record itself (schema ``advlora.results/1``, docs/evaluation.md), as the run wrote it."""
from __future__ import annotations

from typing import Any

from advlora.errors import AdvloraError
from advlora.evaluation.sweep import result_file_name
from advlora.experiments.exports import Format, measured_only, register
from advlora.experiments.results import Result


def export(result: Result) -> list[dict[str, Any]]:
    if result.record is None:
        raise AdvloraError(f"{result.name()}: no results record to export")
    return [result.record]


def parse(docs: list[dict[str, Any]]) -> Result:
    if len(docs) != 1:
        raise AdvloraError(f"an advlora result is one results record, not {len(docs)}")
    return Result.from_record(docs[0])


def applies(result: Result) -> str:
    return measured_only(result) or ("" if result.record is not None else "no results record")


def path(result: Result, doc: dict[str, Any]) -> str:
    return result_file_name(doc)


FORMAT = register(Format("advlora", export, parse, applies, path,
                         doc="the results record as advlora writes it (advlora.results/1)"))
