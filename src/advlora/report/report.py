"""Run reports: one list of blocks rendered twice, to ``report.md`` and to a self-contained ``report.html``.

Both files come from the same ``Report`` object, so they always say the same thing; the HTML embeds the PNG
plots (base64) so that it can be mailed or attached as one file, the markdown links them relatively.
``summary.json`` holds every number the report shows.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlora.io import atomic_write_text, write_json


@dataclass(frozen=True)
class Table:
    """A table inside a report section: ``note`` (a sentence above it, optional), ``header`` and ``rows``."""

    header: list[str]
    rows: list[list[Any]]
    note: str = ""


#: what a report section holds: bullet lines (``str``) and tables, in order
SectionItem = str | Table


@dataclass
class Report:
    """An ordered list of blocks: ("h", level, text) | ("p", text) | ("pre", text) | ("table", header, rows)
    | ("img", relative path, caption) | ("ul", items) | ("details", summary, text)."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> Report:
        self.blocks.append(("h", level, text))
        return self

    def text(self, text: str) -> Report:
        self.blocks.append(("p", text))
        return self

    def code(self, text: str) -> Report:
        self.blocks.append(("pre", text))
        return self

    def table(self, header: list[str], rows: list[list[Any]]) -> Report:
        self.blocks.append(("table", [str(h) for h in header], [[_cell(c) for c in r] for r in rows]))
        return self

    def image(self, rel_path: str, caption: str) -> Report:
        self.blocks.append(("img", rel_path, caption))
        return self

    def bullets(self, items: list[str]) -> Report:
        self.blocks.append(("ul", [str(i) for i in items]))
        return self

    def section(self, heading: str, items: list[SectionItem]) -> Report:
        """A heading, then ``items`` in order: each run of strings as one bullet list, each ``Table`` as a table."""
        self.heading(heading)
        run: list[str] = []
        for item in [*items, None]:
            if isinstance(item, str):
                run.append(item)
                continue
            if run:
                self.bullets(run)
                run = []
            if isinstance(item, Table):
                if item.note:
                    self.text(item.note)
                self.table(item.header, item.rows)
        return self

    def details(self, summary: str, text: str) -> Report:
        """A folded block: ``summary`` shown, preformatted ``text`` below it (HTML ``<details>``, also in markdown)."""
        self.blocks.append(("details", summary, text))
        return self


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def to_markdown(report: Report) -> str:
    out = [f"# {report.title}", ""]
    for b in report.blocks:
        kind = b[0]
        if kind == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "pre":
            out += ["```", b[1].rstrip("\n"), "```", ""]
        elif kind == "table":
            header, rows = b[1], b[2]
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
            out.append("")
        elif kind == "img":
            out += [f"![{b[2]}]({b[1]})", "", f"*{b[2]}*", ""]
        elif kind == "ul":
            out += [f"- {i}" for i in b[1]] + [""]
        elif kind == "details":
            out += [f"<details><summary>{html.escape(b[1])}</summary>", "", "```", b[2].rstrip("\n"), "```", "",
                    "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:980px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;
border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{padding:.25em .6em;border-bottom:1px solid #e4e4e4;text-align:right}th:first-child,td:first-child
{text-align:left}th{background:#f6f6f6}pre{background:#f6f6f6;padding:.7em;overflow-x:auto;font-size:.85em}
figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:.9em}code{background:#f3f3f3}"""


def to_html(report: Report, folder: Path, embed: bool = True) -> str:
    """The same blocks as HTML; images embedded as data URIs (``embed``) or linked."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(report.title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{e(report.title)}</h1>"]
    for b in report.blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "pre":
            out.append(f"<pre>{e(b[1])}</pre>")
        elif kind == "table":
            out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in b[1]) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2]]
            out.append("</tbody></table>")
        elif kind == "img":
            out.append(f'<figure><img src="{_img_src(folder / b[1], b[1], embed)}" alt="{e(b[2])}">'
                       f"<figcaption>{e(b[2])}</figcaption></figure>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "details":
            out.append(f"<details><summary>{e(b[1])}</summary><pre>{e(b[2])}</pre></details>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape, then render markdown's `code` and **bold** spans (the only inline markup reports use)."""
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)


def _img_src(path: Path, rel: str, embed: bool) -> str:
    if embed and path.exists():
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return html.escape(rel)


def write_report(folder: str | Path, report: Report, summary: dict | None = None, *, embed: bool = True) -> None:
    """Write ``report.md``, ``report.html`` (and ``summary.json`` when given) into ``folder``, atomically."""
    folder = Path(folder)
    if summary is not None:
        write_json(folder / "summary.json", summary)
    atomic_write_text(folder / "report.md", to_markdown(report))
    atomic_write_text(folder / "report.html", to_html(report, folder, embed))
