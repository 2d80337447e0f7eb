"""Reports: markdown and HTML carry the same content, plots are real PNGs, tables show the threat model."""
from __future__ import annotations

import json
import re

import pytest

from advlora.experiments.report import alpha_columns, count, fmt, read_history
from advlora.report import plots
from advlora.report.report import Report, to_html, to_markdown, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _report(tmp_path):
    plots.robust_vs_eps({"zero-shot": [(0, 60.0, 0), (2 / 255, 10.0, 0)],
                         "AdvLoRA": [(0, 55.0, 0), (2 / 255, 30.0, 1)]},
                        tmp_path / "plots" / "r.png")
    rep = Report("demo")
    rep.heading("Results").table(["method", "clean", "PGD-10"], [["zero-shot", 60.0, 10.0], ["AdvLoRA", 55.0, 30.25]])
    rep.text("threat model: `linf eps=2/255` **PGD-10**").bullets(["pgd @ 2/255: linf"]).code("sanity: ok")
    rep.image("plots/r.png", "robust vs eps")
    return rep


def test_markdown_and_html_say_the_same(tmp_path):
    rep = _report(tmp_path)
    md, page = to_markdown(rep), to_html(rep, tmp_path)
    for text in ("zero-shot", "AdvLoRA", "30.2", "55.0", "Results", "robust vs eps", "sanity: ok", "pgd @ 2/255"):
        assert text in md and text in page, text
    assert page.count("<tr>") == 3 and md.count("\n| ") == 3
    assert "<code>linf eps=2/255</code>" in page and "<strong>PGD-10</strong>" in page
    # the HTML embeds the plot: one self-contained file
    assert re.search(r'src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)
    assert "](plots/r.png)" in md


def test_write_report_writes_three_files(tmp_path):
    write_report(tmp_path, _report(tmp_path), {"methods": {"AdvLoRA": {"clean": {"r_mean": 55.0}}}})
    assert json.loads((tmp_path / "summary.json").read_text())["methods"]["AdvLoRA"]["clean"]["r_mean"] == 55.0
    assert (tmp_path / "report.md").read_text().startswith("# demo")
    assert "<h1>demo</h1>" in (tmp_path / "report.html").read_text()


def test_html_escapes_text(tmp_path):
    page = to_html(Report("a<b").text("x < y & <script>"), tmp_path)
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_every_plot_is_a_png(tmp_path):
    steps = [1, 2, 3, 4]
    hist = {"loss": [3.0, 2.0, 1.5, 1.2], "lr": [1e-4, 2e-4, 1e-4, 0.0]}
    alphas = {"vision_model.encoder.layers.0.self_attn.q_proj": [1, 1.1, 1.2, 1.3],
              "text_model.encoder.layers.0.self_attn.q_proj": [1, 0.9, 0.9, 0.8]}
    files = [
        plots.clean_vs_robust({"zero-shot": (60.0, 5.0, 0), "adv. full FT": (50.0, 30.0, 1_400_000),
                               "AdvLoRA": (55.0, 28.0, 20_000)}, tmp_path / "c.png"),
        plots.clean_vs_robust({"one": (60.0, 5.0, 10)}, tmp_path / "c1.png"),
        plots.alpha_trajectories({"AdvLoRA": (steps, alphas)}, tmp_path / "a.png"),
        plots.alpha_trajectories({}, tmp_path / "a0.png"),
        plots.training_curves({"AdvLoRA": (steps, hist), "adv. LoRA": (steps, {"loss": [2, 1, 1, 1]})},
                              tmp_path / "t.png"),
        plots.singular_spectra({"vision.q": [4.0, 2.0, 1.0, 0.0], "text.q": [1.0, 1.0]}, tmp_path / "s.png"),
        plots.effective_ranks({"vision.q": (2.5, 2, 4), "text.q": (2.0, 2, 2)}, tmp_path / "e.png"),
    ]
    for f in files:
        data = f.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, f


def test_formatting_helpers():
    assert fmt({"mean": 45.23, "std": 1.26, "n": 3}, seeds=3) == "45.2 ± 1.3"
    assert fmt({"mean": 45.23, "std": 0.0, "n": 1}, seeds=1) == "45.2"
    assert fmt(None) == "-" and fmt({"mean": float("nan"), "std": 0, "n": 0}) == "-"
    assert count(1_477_761) == "1.48M" and count(24_576) == "24.6k" and count(0) == "0"


def test_history_reading_and_alpha_columns(tmp_path):
    p = tmp_path / "history.csv"
    p.write_text("step,loss,lr,alpha_lr,alpha/v.q,alpha/t.q,alpha_mean/vision\n1,2.0,0.1,0.1,1.0,1.0,1.0\n"
                 "2,1.0,0.1,0.1,1.5,,1.5\n")
    steps, cols = read_history(p)
    assert steps == [1.0, 2.0] and cols["loss"] == [2.0, 1.0]
    al = alpha_columns(cols)
    assert set(al) == {"v.q", "t.q"} and al["v.q"] == [1.0, 1.5]
    assert read_history(tmp_path / "missing.csv") == ([], {})


@pytest.mark.parametrize("n", [1, 3])
def test_alpha_plot_panels(tmp_path, n):
    runs = {f"run{i}": ([1, 2], {"vision.q": [1.0, 1.1]}) for i in range(n)}
    assert plots.alpha_trajectories(runs, tmp_path / "a.png").read_bytes().startswith(PNG)
