"""Adapter methods as declarations: nothing outside ``advlora.adapters.methods`` compares a method's name; a
throw-away method declared in this file alone trains, is attacked, saves, loads and merges through the CLI."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from advlora.adapters import method as adapter_methods

SRC = Path(__file__).resolve().parents[1] / "src" / "advlora"
METHODS_PACKAGE = SRC / "adapters" / "methods"


def name_comparisons(source: str, names: set[str]) -> list[str]:
    """The comparisons in ``source`` of something named like a method (``method``, ``cfg.method``, ...) with a
    method's name (or a tuple / list / set holding one), as 'line: text'."""
    def names_in(node) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value} & names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*(names_in(e) for e in node.elts)) if node.elts else set()
        return set()

    def mentions_method(node) -> bool:
        return any((isinstance(n, ast.Name) and "method" in n.id) or (isinstance(n, ast.Attribute) and "method" in n.attr)
                   for n in ast.walk(node))

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(names_in(s) for s in sides) and any(mentions_method(s) for s in sides if not names_in(s)):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_detector_finds_a_method_name_comparison():
    names = {"advlora", "frozen", "lora"}
    src = ("if cfg.method == 'advlora': pass\nif method != 'frozen': pass\nif m.method.method in ('lora', 'x'): pass\n"
           "if scope == 'full': pass\nif adapter_methods.get(cfg.method).trains: pass\n")
    assert [f.split(":")[0] for f in name_comparisons(src, names)] == ["1", "2", "3"]


def test_no_module_outside_the_methods_package_compares_a_method_name():
    names = set(adapter_methods.choices())
    assert {"frozen", "full", "lora", "advlora", "pissa"} <= names
    hits = [f"{p.relative_to(SRC)}:{hit}" for p in sorted(SRC.rglob("*.py")) if METHODS_PACKAGE not in p.parents
            for hit in name_comparisons(p.read_text(encoding="utf-8"), names)]
    assert not hits, "\n".join(hits)
