"""``advlora leaderboard``: the tables built from results files (grouping, seeds as mean +- spread, Pareto fronts,
the masking mark, reported entries apart), the command's folder rules, and the page driven in headless Chromium."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from advlora.cli import main
from advlora.errors import AdvloraError
from advlora.experiments.leaderboard import board_data, browser, collect, mean_spread, pareto_front
from advlora.experiments.leaderboard.site import write_site
from advlora.experiments.leaderboard.synthetic import synthetic_record
from advlora.experiments.reported import load_reported
from advlora.io import write_json


def write_run(folder: Path, records: list[dict], bench: dict | None = None) -> Path:
    """``records`` as results files of one run folder (with its manifest.json), and a bench.json if given."""
    write_json(folder / "manifest.json", {"command": "advlora eval --test", "platform": "test-machine",
                                          "execution": {"device": "cpu"}})
    for i, rec in enumerate(records):
        write_json(folder / "results" / f"{i:03d}.json", rec)
    if bench is not None:
        write_json(folder / "bench" / "bench.json", bench)
    return folder


# one retrieval table of 4 rows (lora has 3 seeds, dora is flagged), one clean-only table, one classification table
LORA = [(60.0, 30.0), (62.0, 33.0), (64.0, 27.0)]
RECORDS = [synthetic_record(method="lora", seed=s, clean=c, robust=r, attacks={"pgd": r, "square": r + 5})
           for s, (c, r) in enumerate(LORA)] + [
    synthetic_record(method="full", clean=70.0, robust=25.0, trainable=1_000_000),
    synthetic_record(method="advlora", clean=55.0, robust=35.0, trainable=40_000),
    synthetic_record(method="dora", clean=80.0, robust=60.0, flagged=True),
    synthetic_record(method="lora", eps=None, robust=None),
    synthetic_record(task="classification", dataset="digits", method="vera", objective="fare", clean=40.0,
                     robust=10.0),
]
BENCH = {"methods": {"config": {"size": "vit-b32"}, "rows": [
    {"method": "lora", "trainable": 12345, "step_vs_lora": 1.0, "peak_vs_full": 0.6},
    {"method": "dora", "trainable": 13000, "step_vs_lora": 1.9, "peak_vs_full": 0.7}]}}


@pytest.fixture()
def run_dir(tmp_path):
    return write_run(tmp_path / "run", RECORDS, BENCH)


def _table(data, threat="linf 4/255", task="retrieval"):
    return next(t for t in data["measured"] if t["threat"] == threat and t["task"] == task)


def _row(table, method):
    return next(r for r in table["rows"] if r["method"] == method)


def test_one_table_per_task_data_threat_and_protocol(run_dir):
    data = board_data(collect([str(run_dir)]))
    keys = sorted((t["task"], t["dataset"], t["threat"], t["protocol"]) for t in data["measured"])
    assert keys == [("classification", "digits-test", "linf 4/255", "advlora-default"),
                    ("retrieval", "emoji-downstream-test", "clean only", "advlora-default"),
                    ("retrieval", "emoji-downstream-test", "linf 4/255", "advlora-default")]
    assert [len(_table(data)["rows"]), len(_table(data, "clean only")["rows"])] == [4, 1]
    assert _table(data)["attacks"] == ["pgd", "square"]


def test_seeds_are_one_row_with_mean_and_sample_spread(run_dir):
    lora = _row(_table(board_data(collect([str(run_dir)]))), "lora")
    assert lora["seeds"] == 3
    assert lora["clean"] == pytest.approx([62.0, statistics.stdev([60, 62, 64])])
    assert lora["robust"] == pytest.approx([30.0, statistics.stdev([30, 33, 27])])
    assert lora["attacks"]["square"] == pytest.approx([35.0, 3.0])
    assert [p["seed"] for p in lora["provenance"]] == [0, 1, 2]
    prov = lora["provenance"][0]
    assert prov["command"] == "advlora eval --test" and prov["commit"] == "0" * 40
    assert "test-machine" in prov["machine"] and prov["protocol"] == "advlora-default"
    assert Path(prov["file"]).is_file()
    assert mean_spread([]) is None and mean_spread([4.0]) == (4.0, 0.0)


def test_costs_come_from_bench_methods_and_a_run_block_wins(run_dir):
    table = _table(board_data(collect([str(run_dir)])))
    lora, full, dora = _row(table, "lora"), _row(table, "full"), _row(table, "dora")
    assert (lora["trainable"], lora["trainable_from"], lora["step_vs_lora"]) == (12345, "bench", 1.0)
    assert (dora["step_vs_lora"], dora["peak_vs_full"]) == (1.9, 0.7)
    assert (full["trainable"], full["trainable_from"], full["step_vs_lora"]) == (1_000_000, "run", None)


def test_flagged_rows_are_marked_and_never_ranked_nor_on_a_front(run_dir):
    table = _table(board_data(collect([str(run_dir)])))
    dora = _row(table, "dora")                     # the highest robust number, but flagged
    assert dora["flagged"] and "FLAGGED" in dora["verdict"] and "robust above clean" in dora["verdict"]
    assert "rank" not in dora and not dora.get("pareto_clean") and not dora.get("pareto_params")
    ranks = {r["method"]: r.get("rank") for r in table["rows"]}
    assert ranks == {"advlora": 1, "lora": 2, "full": 3, "dora": None}
    assert {r["method"] for r in table["rows"] if r.get("pareto_clean")} == {"advlora", "lora", "full"}
    # fewest parameters with the best robust: advlora (40k) dominates lora (12k, robust 30) only in robust
    assert {r["method"] for r in table["rows"] if r.get("pareto_params")} == {"advlora", "lora"}


def test_pareto_front_of_maximising_both():
    pts = [(1, 5), (2, 4), (3, 1), (2, 2), (1, 5), (0, 6), (3, 0.5)]
    assert pareto_front(pts) == [True, True, True, False, True, True, False]
    assert pareto_front([]) == []
    assert pareto_front([(1, 1), (1, 2)]) == [False, True]


def test_reported_entries_never_in_a_measured_table(run_dir):
    reported = load_reported()
    data = board_data(collect([str(run_dir)], reported))
    measured = [r for t in data["measured"] for r in t["rows"]]
    names = {e.model for e in reported}
    assert measured and not any(r["backbone"] in names for r in measured)
    assert all(t["kind"] == "measured" for t in data["measured"])
    assert data["reported"] and all(t["kind"] == "reported" for t in data["reported"])
    rows = [r for t in data["reported"] for r in t["rows"]]
    assert sum(r["seeds"] for r in rows) == len(reported)
    assert all(r["source"] and "rank" not in r for r in rows)


def test_no_results_is_one_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdvloraError, match="no results files"):
        collect([str(tmp_path / "empty")])


def test_command_writes_the_site_and_never_replaces_a_foreign_folder(run_dir, tmp_path, capsys):
    def cli(*args: str) -> tuple[int, str]:
        code = main(["leaderboard", *args])
        return code, capsys.readouterr().err

    site = tmp_path / "site"
    assert cli(str(run_dir), "--reported", "--out", str(site)) == (0, "")
    assert {"index.html", "leaderboard.js", "leaderboard.css", "data.js", ".advlora-run"} <= {
        p.name for p in site.iterdir()}
    html = (site / "index.html").read_text()
    assert "http://" not in html and "https://" not in html           # nothing fetched
    data = json.loads((site / "data.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    assert len(data["measured"]) == 3 and data["reported"]
    code, err = cli(str(run_dir), "--out", str(site))
    assert code == 2 and "--overwrite" in err
    assert cli(str(run_dir), "--out", str(site), "--overwrite")[0] == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert cli(str(run_dir), "--out", str(foreign), "--overwrite")[0] == 2
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and (foreign / "notes.txt").read_text() == "keep"


# ---- the page in a real browser ---------------------------------------------------------------------------------
@pytest.mark.skipif(bool(browser.missing()), reason=browser.missing() or "-")
def test_page_in_headless_chromium(run_dir, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    write_site(board_data(collect([str(run_dir)], load_reported())), site)
    with browser.page(site / "index.html") as d:
        rows = lambda sel: d.find_elements("css selector", sel)                       # noqa: E731
        table = "table[data-kind=measured]#t-measured-retrieval-emoji-downstream-test-linf-4-255-advlora-default"
        assert len(rows("table[data-kind=measured]")) == 3
        assert len(rows(f"{table} tbody tr.row")) == 4
        assert len(rows("table[data-kind=reported] tbody tr.row")) == len(
            {(e.dataset, e.threat, e.protocol, e.model) for e in load_reported()})
        assert len(rows(f"{table} tbody tr.flagged")) == 1
        assert len(rows("svg.plot")) == 2 * 3 and rows("svg.plot circle.front")

        def robust_column() -> list[str]:
            return d.execute_script(
                "const t = document.querySelector(arguments[0]);"
                "const i = [...t.querySelectorAll('thead th')].findIndex(h => h.dataset.col === 'robust r_mean');"
                "return [...t.querySelectorAll('tbody tr.row')].map(r => r.children[i].textContent);", table)

        before = robust_column()
        d.find_element("css selector", f"{table} th[data-col='robust r_mean']").click()
        desc = robust_column()
        assert desc != before and [float(v.split()[0]) for v in desc] == sorted(
            [float(v.split()[0]) for v in desc], reverse=True)
        d.find_element("css selector", f"{table} th[data-col='robust r_mean']").click()
        assert robust_column() == desc[::-1]

        d.execute_script("const s = document.getElementById('f-family'); s.value = 'full';"
                         "s.dispatchEvent(new Event('change'));")
        visible = [r for r in rows(f"{table} tbody tr.row") if r.is_displayed()]
        assert len(visible) == 1 and "full" in visible[0].text
        assert len(rows("table[data-kind=reported] tbody tr.row")) > 0        # the filter is for measured rows

        d.find_element("css selector", f"{table} tr.row:not([hidden]) a[href^='#p-']").click()
        assert "advlora eval --test" in d.find_element("css selector", f"{table} tr.detail").text
        assert browser.console_errors(d) == []
