"""Finding a declared concept's name compared as a string in source code: the tests that hold "no module outside
its declaring package compares a method's (an attack's) name" read the source through these."""
from __future__ import annotations

import ast
from collections.abc import Callable


def names_in(node: ast.AST, names: set[str]) -> set[str]:
    """The declared names ``node`` holds as a string literal or inside a tuple / list / set literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value} & names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(names_in(e, names) for e in node.elts)) if node.elts else set()
    return set()


def mentions(node: ast.AST, word: str) -> bool:
    """Whether ``word`` is part of a name, an attribute or a string key anywhere in ``node`` (``cfg.method``,
    ``method``, ``r["attack"]``)."""
    return any((isinstance(n, ast.Name) and word in n.id) or (isinstance(n, ast.Attribute) and word in n.attr)
               or (isinstance(n, ast.Constant) and isinstance(n.value, str) and word in n.value)
               for n in ast.walk(node))


def comparisons(source: str, names: set[str], counts: Callable[[set[str], list[ast.AST]], bool]) -> list[str]:
    """The comparisons in ``source`` with a declared name on one side, as 'line: text', kept where
    ``counts(the names compared, the other sides)`` says the comparison is one of a concept's name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            named = set().union(*(names_in(s, names) for s in sides))
            if named and counts(named, [s for s in sides if not names_in(s, names)]):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found
