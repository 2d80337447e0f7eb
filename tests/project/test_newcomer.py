"""What a newcomer meets first: the demo report's tables, the CLI reference, flag names, messages and warnings."""
from __future__ import annotations

from pathlib import Path

from advlora.experiments.demo import sections
from advlora.report.report import Report, Table, to_html, to_markdown


def _demo_summary() -> dict:
    def entry(c, r):
        return {"clean": {"r_mean": {"mean": c}}, "robust": {"pgd@4/255": {"metrics": {"r_mean": {"mean": r}}}}}

    per = {"clean": 30.0, "robust": 5.0, "metric": "r_mean", "n_images": 50, "threat": "linf"}
    return {"eval": {"eps": ["4/255"], "steps": 3}, "datasets": ["down"],
            "results": {"down": {"zero-shot": entry(20.0, 2.0), "AdvLoRA": entry(40.0, 15.0)}},
            "forgetting": {"zero-shot": per, "AdvLoRA": {**per, "clean": 28.0}},
            "transfer": {"src": {"zero-shot": per, "AdvLoRA": {**per, "robust": 9.0}}}}


def test_demo_sections_render_as_tables_in_markdown_and_html(tmp_path: Path):
    rep = Report("demo")
    for heading, items in sections(_demo_summary(), "src"):
        rep.section(heading, items)
    md, page = to_markdown(rep), to_html(rep, tmp_path)
    assert "- |" not in md and "<li>|" not in page  # no table row written as a bullet
    assert page.count("<table>") == 2 and "<ul>" not in page
    lines = md.splitlines()
    # each table: a header row, the separator, one row per method
    assert sum(line.startswith("|---") for line in lines) == 2
    assert any(line.startswith("| AdvLoRA | 28.0 | 5.0 | -2.0 | +0.0 |") for line in lines)
    assert "<td>+4.0</td>" in page  # the transfer table's robust change from zero-shot, a real cell


def test_section_keeps_bullets_and_tables_in_order():
    rep = Report("t").section("S", ["a", "b", Table(["x"], [["1"]], note="n"), "c"])
    assert [b[0] for b in rep.blocks] == ["h", "ul", "p", "table", "ul"]


def test_cli_reference_gives_flags_default_off_and_hides_deprecated_aliases():
    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `-")]
    for flag in ("--no-random-start", "--no-sanity", "--no-dist-eval"):
        assert any(r.startswith(f"| `{flag}` | off |") for r in rows), flag
    assert not [r for r in rows if r.rstrip().endswith("|  |")], "an option row without help (a hidden alias)"


def test_eval_calls_attack_iterations_attack_steps_and_still_reads_steps(capsys):
    from advlora.cli import build_parser

    parser, _ = build_parser("eval")
    assert parser.parse_args(["eval", "--attack-steps", "7"]).steps == 7
    assert parser.parse_args(["eval", "--steps", "5"]).steps == 5     # the old spelling: same value, one warning
    assert "--steps is deprecated, use --attack-steps" in capsys.readouterr().err
    train, _ = build_parser("train")
    helps = {a.option_strings[0]: a.help for a in train._subparsers._group_actions[0].choices["train"]._actions
             if a.option_strings}
    assert "optimi" in helps["--steps"] and "attack" in helps["--attack-steps"]


def test_data_check_reads_embedded_names_and_exits_2_on_a_missing_path(tmp_path, capsys):
    from advlora.cli import main

    assert main(["data", "check", "digits", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "digits (format embedded, split test)" in out and out.rstrip().endswith("ok")
    assert main(["data", "check", str(tmp_path / "nothing.json")]) == 2
    assert "no such file and not an embedded data set" in capsys.readouterr().err


def test_a_flagged_check_prints_the_relation_that_holds():
    """A failed check states what was measured: ``|change| 2.08 >= 1``, never the tested ``< 1``."""
    import torch

    from advlora.attacks import ThreatModel
    from advlora.evaluation.sanity import Probe, check_fgsm_vs_iterative, check_robust_le_clean, run_checks

    th = ThreatModel(steps=2)

    def rerun(key, threat, attack=None, ranks=False):
        r = 90.0 if threat.eps == 0.5 else {(2, 1): 10.0, (4, 1): 7.92, (2, 2): 10.3}[threat.steps, threat.restarts]
        m = {"r_mean": r}
        return (m, torch.zeros(4, dtype=torch.long)) if ranks else m

    probe = Probe(n_images=4, txt2img=torch.arange(4), images=torch.rand(2, 3, 8, 8),
                  objective=lambda x: (x ** 2).flatten(1).sum(1), rerun=rerun, runs={"pgd": ("pgd", th)})
    lines = {str(c) for c in run_checks(th, {"attacks": {}}, ctx_checks={}, probe=probe)}
    assert any(s.startswith("WARN pgd steps x2") and "(|change| 2.08 >= 1)" in s for s in lines), lines
    assert any(s.startswith("PASS pgd restarts x2") and "(|change| 0.30 < 1)" in s for s in lines), lines
    assert any(s.startswith("WARN pgd linf eps=0.5") and "90.0 above chance 75.0 + 5" in s for s in lines), lines
    fgsm = check_fgsm_vs_iterative(torch.tensor([5, 5]), "pgd", torch.tensor([0, 5]), exit_k=1)
    assert "0.0 < 50.0 (one step stronger" in str(fgsm[0]) and fgsm[0].status == "WARN"
    worse = check_robust_le_clean("pgd", {"clean": {"r_mean": 1.0, "i2t_r1": 1.0},
                                          "metrics": {"r_mean": 5.0, "i2t_r1": 5.0}}, "image")
    assert "robust > clean" in str(worse) and not worse.passed


def test_sanity_re_runs_are_labelled_in_the_progress(image_text_folder, tmp_path, capsys, monkeypatch):
    """Every attack call's progress line names what it is for: the sanity checks' re-runs say so."""
    import advlora.progress
    from advlora.cli import main

    monkeypatch.setattr(advlora.progress, "LOG_INTERVAL", 0.0)
    from train_utils import save_test_model

    model = str(save_test_model(tmp_path / "m"))
    assert main(["eval", "--model", model, "--data", str(image_text_folder), "--attacks", "pgd",
                 "--attack-steps", "1", "--sanity-limit", "4", "--progress", "log", "--out", str(tmp_path / "e")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("pgd", "fgsm"))]
    assert lines[0].startswith("pgd: batch 1/1, ")
    assert any(line.startswith("pgd (sanity check on 4 images: linf eps=4/255 pgd steps=2") for line in lines)
    assert all(line.startswith(("pgd (sanity", "fgsm (sanity")) for line in lines[1:]), lines


def test_log_progress_speaks_while_one_long_unit_runs_and_ends_once():
    """A unit of work that takes minutes (Square on one batch) still gets a line every interval; the end line
    is printed once."""
    import io
    import time

    from advlora.progress import BatchProgress

    buf = io.StringIO()
    bar = BatchProgress("standard/square", 1, mode="log", interval=0.05, stream=buf)
    time.sleep(0.3)
    bar.update()
    bar.close()
    lines = buf.getvalue().splitlines()
    assert len([line for line in lines if line.startswith("standard/square: batch 0/1, ")]) >= 2, lines
    assert [line for line in lines if "batch 1/1" in line] == lines[-1:]
    time.sleep(0.2)
    assert buf.getvalue().splitlines() == lines          # nothing after close


def _train_run(tmp_path: Path) -> Path:
    from train_utils import tiny_config, write_data

    from advlora.training import load_run_config, train

    out = tmp_path / "run"
    train(load_run_config(overrides=tiny_config(write_data(tmp_path / "data"))), out)
    return out


def test_results_reads_a_training_run_and_adds_no_unexplained_suffixes(tmp_path, capsys):
    from advlora.cli import main

    run = _train_run(tmp_path)
    assert main(["results", str(run), str(run)]) == 0       # the same run twice: two rows of one data set
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["data", "model"] and "gallery" in lines[0]
    rows = [line for line in lines if line.startswith(str(tmp_path / "data" / "ann.jsonl"))]
    assert len(rows) == 2 and "[1]" not in out and "random clip:test" in rows[0] and " lora " in rows[0]
    assert " 8 " in rows[0] and "linf 4/255" in rows[0]         # the gallery: the 8 test images
    assert "compare rows of the same gallery size" in out and "2 results files" in out


def test_adapter_info_inspects_a_training_run_and_its_adapter_folder(tmp_path, capsys):
    from advlora.cli import main

    run = _train_run(tmp_path)
    for target in (run, run / "adapter"):
        assert main(["adapter", "info", "--adapter", str(target)]) == 0
        out = capsys.readouterr().out
        assert f"adapter {run / 'adapter'} on model random clip:test" in out, out
        assert "method lora, rank 2, towers vision, 8 adapted layers; 1,024 trainable" in out
    assert main(["adapter", "info", "--adapter", str(tmp_path / "none")]) == 2


def test_eval_names_its_gallery_and_warns_when_limit_is_below_the_largest_k(image_text_folder, tmp_path, capsys):
    from train_utils import save_test_model

    from advlora.cli import main

    model = str(save_test_model(tmp_path / "m"))
    assert main(["eval", "--model", model, "--data", str(image_text_folder), "--limit", "4",
                 "--out", str(tmp_path / "e")]) == 0
    captured = capsys.readouterr()
    assert "gallery of 4 images, 8 captions" in captured.out
    assert "warning: --limit 4 is below the largest k (10)" in captured.err
    assert main(["eval", "--model", model, "--data", str(image_text_folder), "--out", str(tmp_path / "f")]) == 0
    assert "warning" not in capsys.readouterr().err
