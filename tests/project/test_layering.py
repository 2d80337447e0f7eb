"""The package's import graph: no cycles between modules, and no import from a later pipeline stage.

The stages, earliest first, are those of docs/contracts.md; a module may import its own stage and earlier ones.
Function-local imports count too: a cycle through a function body is still a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import advlora

SRC = Path(advlora.__file__).parent

#: stage of each sub-package or top-level module; the package's __init__ (the public facade) and __main__
#: sit above everything
STAGES = [
    {"errors", "runtime", "preempt", "io", "threads", "config", "configs", "metrics", "losses", "runs",
     "progress", "hashing", "declarations", "plugins"},
    {"data"},
    {"models"},
    {"adapters"},
    {"attacks"},
    {"evaluation"},          # training validates through the evaluation protocol, so evaluation comes first
    {"training"},
    {"report"},
    {"experiments", "bench"},
    {"cli"},
]
RANK = {name: i for i, names in enumerate(STAGES) for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC.parent).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = p
    return out


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for m, p in mods.items():
        edges[m] = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges[m].update(t for t in targets if t in mods and t != m)
    return edges


def _stage(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return None                     # the facade and the entry point may import anything
    return RANK[parts[1]]


def test_every_module_has_a_stage():
    unknown = sorted({m.split(".")[1] for m in _modules() if "." in m} - set(RANK) - {"__main__"})
    assert not unknown, f"modules outside every stage of STAGES (add them where they belong): {unknown}"


def test_no_import_from_a_later_stage():
    edges = _imports(_modules())
    upward = sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts
                    if _stage(m) is not None and _stage(t) is not None and _stage(t) > _stage(m))
    assert not upward, "imports that run back up the pipeline:\n" + "\n".join(upward)


def test_nothing_below_the_cli_imports_it():
    edges = _imports(_modules())
    back = sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts
                  if t.startswith("advlora.cli") and not m.startswith("advlora.cli") and m != "advlora.__main__")
    assert not back, back


def test_no_import_cycles():
    mods = _modules()
    edges = _imports(mods)
    is_pkg = {m: p.name == "__init__.py" for m, p in mods.items()}
    # a package's __init__ re-exporting its own children is not a cycle
    g = {m: {t for t in ts if not (is_pkg[t] and m.startswith(t + ".")) and not (is_pkg[m] and t.startswith(m + "."))}
         for m, ts in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """The graph code finds a planted cycle and a planted upward import."""
    pkg = tmp_path / "advlora"
    (pkg / "data").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from advlora.data.b import x\nfrom advlora.cli.main import y\n")
    (pkg / "data" / "b.py").write_text("def f():\n    from advlora.data.a import z\n")
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "cli" / "main.py").write_text("")
    monkeypatch.setitem(globals(), "SRC", pkg)   # this module's SRC, whatever package it is imported in
    edges = _imports(_modules())
    assert "advlora.data.b" in edges["advlora.data.a"] and "advlora.data.a" in edges["advlora.data.b"]
    assert "advlora.cli.main" in edges["advlora.data.a"]


def test_help_imports_no_torch():
    """``advlora --help`` answers without importing torch, transformers or any command module."""
    import subprocess
    import sys

    code = ("import sys\nfrom advlora.cli import build_parser\nbuild_parser(None)[0].format_help()\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
            "cmds = sorted(m for m in sys.modules if m.startswith('advlora.cli.') and m != 'advlora.cli.common')\n"
            "print(heavy, cmds)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[] []", out
