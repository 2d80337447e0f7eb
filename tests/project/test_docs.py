"""The docs say what the committed runs printed: docs/results.md and the README's result blocks are rendered
from docs/results/*.json, the README carries no provenance of its own, and no other page types a result table."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _script("gen_results")
README = (ROOT / "README.md").read_text()
#: a decimal number as a result prints it (12.1, -6.7, 0.960), not a version (2.13.0) nor part of an eps (4/255)
DECIMAL = re.compile(r"(?<![\d.])[+-]?\d+\.\d+(?![\d.]*\d)(?!\.\d)")
#: a number as a result table prints it: one decimal (r_mean 12.1), not a hyper-parameter (2.5e-3, 0.98)
ONE_DECIMAL = re.compile(r"(?<![\d.])\d+\.\d(?![\d.e])")
COMMIT = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")


def _blocks(text: str) -> tuple[str, str]:
    """(inside, outside) the generated result blocks of ``text``."""
    inside, outside = [], []
    for i, part in enumerate(re.split(r"(<!-- results:[\w-]+:(?:begin|end) -->)", text)):
        (inside if i % 4 == 2 else outside).append(part)
    return "".join(inside), "".join(outside)


def _table_cells(markdown: str) -> set[str]:
    """Every number in the markdown tables of ``markdown``."""
    cells = set()
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells.update(m.lstrip("+") for m in DECIMAL.findall(line))
    return cells


def test_results_page_is_rendered_from_the_summary_files():
    assert (DOCS / "results.md").read_text() == gen.render_results(gen.load_summaries()), \
        "docs/results.md differs from docs/results/*.json: run scripts/gen_results.py"


def test_readme_blocks_are_rendered_from_the_summary_files():
    blocks = gen.readme_blocks(gen.load_summaries())
    assert set(blocks) >= {"demo", "spread"}
    assert gen.splice(README, blocks) == README, \
        "README.md's result blocks are out of date: run scripts/gen_results.py"
    demo = next(s for s in gen.load_summaries() if s["id"] == "demo")
    main = next(t for t in demo["tables"] if t["id"] == "main")
    inside, _ = _blocks(README)
    for row in main["rows"]:
        assert "| " + " | ".join(row) + " |" in inside, row


def test_every_summary_file_records_its_provenance():
    summaries = gen.load_summaries()
    assert len(summaries) >= 8
    for s in summaries:
        assert s["command"].strip() and s["tables"], s["id"]
        for key in ("commit", "date", "wall"):
            assert isinstance(s[key], str) and s[key].strip(), (s["id"], key)
        assert s["machine"]["cores"] and s["machine"]["threads"], s["id"]


def test_a_wrong_summary_file_is_refused(tmp_path):
    good = json.loads((DOCS / "results" / "demo.json").read_text())
    ragged = {**good, "tables": [{**good["tables"][0], "rows": [good["tables"][0]["rows"][0][:-1]]}]}
    (tmp_path / "demo.json").write_text(json.dumps(ragged))
    with pytest.raises(ValueError, match="cells"):
        gen.load_summaries(tmp_path)
    (tmp_path / "demo.json").write_text(json.dumps({k: v for k, v in good.items() if k != "commit"}))
    with pytest.raises(ValueError, match="commit"):
        gen.load_summaries(tmp_path)
    # and a changed number changes the page, so the comparison above can fail
    changed = json.loads(json.dumps(good))
    changed["tables"][0]["rows"][0][3] = "99.9"
    (tmp_path / "demo.json").write_text(json.dumps(changed))
    assert gen.render_results(gen.load_summaries(tmp_path)) != gen.render_results([good])


def test_readme_is_a_guide_without_provenance():
    assert len(README.splitlines()) <= 160
    _, outside = _blocks(README)
    assert not COMMIT.findall(outside), COMMIT.findall(outside)
    assert "session" not in README.lower()
    assert "/tmp" not in README and "/work/" not in README and "/root" not in README
    assert "make demo" in README and "make test" in README


def test_readme_numbers_come_from_the_results_tables():
    """A decimal number anywhere in the README (outside code) is a cell of a table of docs/results.md."""
    cells = _table_cells((DOCS / "results.md").read_text())
    prose = re.sub(r"```.*?```|arXiv \d{4}\.\d{4,5}", "", README, flags=re.S)
    stray = [n for n in DECIMAL.findall(prose) if n.lstrip("+") not in cells]
    assert not stray, f"numbers in README.md not in docs/results.md's tables: {stray}"


def test_readme_detects_a_typed_number():
    cells = _table_cells((DOCS / "results.md").read_text())
    assert "22.3" in cells and "123.4" not in cells
    assert DECIMAL.findall("robust 123.4 at 4/255 with torch 2.13.0") == ["123.4"]


def test_no_other_page_types_a_result_table():
    """Measured tables live in docs/results.md only; a row of three or more results elsewhere is a copy."""
    for page in sorted(DOCS.glob("*.md")):
        if page.name in ("results.md", "cli.md"):
            continue
        for n, line in enumerate(page.read_text().splitlines(), 1):
            nums = ONE_DECIMAL.findall(line)
            assert len(nums) < 3, f"{page.name}:{n}: a measured table belongs in docs/results/: {line[:100]}"


def test_doc_links_stay_inside_the_repository():
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                assert page.name != "method.md", f"{page.name} links outside the repository: {target}"
                continue
            path = (page.parent / target).resolve()
            assert ROOT in path.parents, f"{page.name} links outside the repository: {target}"
            assert path.exists(), f"{page.name}: broken link {target}"
        assert "../shared" not in page.read_text(), page.name
    ids = {s["id"] for s in gen.load_summaries()}
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for anchor in re.findall(r"results\.md#([\w-]+)", page.read_text()):
            assert anchor in ids, f"{page.name}: results.md has no section {anchor!r}"


def test_cli_reference_is_generated_from_the_parsers():
    ref = _script("gen_cli_reference")
    assert (DOCS / "cli.md").read_text() == ref.render(), \
        "docs/cli.md is out of date: run scripts/gen_cli_reference.py"
    text = (DOCS / "cli.md").read_text()
    for command in ("eval", "train", "data", "demo"):
        assert f"## advlora {command}" in text
    assert "--model" in text and "Exit codes" in text
