"""A user's work is never lost: run folders advlora did not create are never replaced, options are checked
before any work, a failed checkpoint write keeps the previous one, Ctrl-C checkpoints, ``--resume`` on a fresh
folder starts, a misspelt model id fails at once with a "did you mean", and files follow the umask."""
from __future__ import annotations

import functools
import os
import re
import shlex
import signal
import stat
from pathlib import Path

import pytest
import yaml
from train_utils import save_test_model, tiny_config, write_data

import advlora.training
from advlora.cli import main
from advlora.errors import EXIT_BAD_INPUT, EXIT_PREEMPTED, EXIT_WRITE_FAILED, AdvloraError
from advlora.training import load_run_config, train

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) with its bytes and mode."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def ann(tmp_path):
    return write_data(tmp_path / "data", n=8)


@pytest.fixture
def run_yaml(ann, tmp_path):
    """A tiny training config file: 4 steps, a checkpoint every step."""
    conf = tiny_config(ann, train={"steps": 4, "batch_size": 2, "checkpoint_every": 1, "keep_last": 5},
                       eval={"val_limit": 4, "test_limit": 4, "test_steps": 1, "val_steps": 1, "robust": False})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_test_model(tmp_path_factory.mktemp("model") / "m")


def test_eval_out_on_a_training_run_refuses_and_leaves_it_byte_identical(run_yaml, ann, model_dir, tmp_path,
                                                                        capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", str(run_yaml), "--out", str(run), "--steps", "1", "--progress", "off"]) == 0
    before = _snapshot(run)
    assert "adapter/adapter_model.safetensors" in before and ".advlora-run" in before
    capsys.readouterr()
    for attacks in ([], ["--attacks", "pgd", "--attack-steps", "1", "--no-sanity"]):
        code = main(["eval", "--model", str(model_dir), "--data", str(ann), "--split", "test", "--out", str(run),
                     *attacks])
        err = capsys.readouterr().err
        assert code == EXIT_BAD_INPUT and len(err.strip().splitlines()) == 1, err
        assert "advlora train run" in err and "--overwrite" in err
        assert _snapshot(run) == before
    # a folder advlora did not create is never replaced, not even with --overwrite
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code = main(["eval", "--model", str(model_dir), "--data", str(ann), "--out", str(mine), "--overwrite"])
    assert code == EXIT_BAD_INPUT and "not created by advlora" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    # --overwrite replaces a folder advlora created
    assert main(["eval", "--model", str(model_dir), "--data", str(ann), "--limit", "4", "--out", str(run),
                 "--overwrite"]) == 0
    assert (run / "metrics.json").is_file() and not (run / "checkpoints").exists()


def test_train_refuses_an_existing_run_naming_resume_and_overwrite(run_yaml, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--config", str(run_yaml), "--out", str(run), "--steps", "1", "--progress", "off"]
    assert main(args) == 0
    before = _snapshot(run)
    capsys.readouterr()
    assert main(args) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert _snapshot(run) == before
    assert main([*args, "--overwrite"]) == 0
    assert (run / "adapter").is_dir() and not list(tmp_path.glob(".run.replaced-*"))


def test_a_rejected_eval_leaves_nothing_behind(ann, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # a model that is not found, after the evaluation's state folder would have been made
    code = main(["eval", "--model", str(tmp_path / "no-such-model"), "--data", str(ann), "--attacks", "pgd",
                 "--no-sanity"])
    assert code == EXIT_BAD_INPUT and "cannot load model" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    code = main(["eval", "--model", str(tmp_path / "no-such-model"), "--data", str(ann), "--attacks", "pgd",
                 "--out", str(tmp_path / "e")])
    assert code == EXIT_BAD_INPUT and not (tmp_path / "e").exists()


def test_eps_of_one_or_more_is_refused_with_the_fraction(ann, run_yaml, model_dir, tmp_path, capsys):
    from advlora.attacks import ThreatModel

    with pytest.raises(AdvloraError, match=r"4/255"):
        ThreatModel(eps=4)
    assert ThreatModel(eps="4/255").eps == pytest.approx(4 / 255)
    assert ThreatModel(norm="l2", eps=4).eps == 4                    # an L2 radius of 4 is a radius
    with pytest.raises(AdvloraError, match="diameter"):
        ThreatModel(norm="l2", eps=56).check_image_size(32)          # sqrt(3 * 32 * 32) = 55.4
    ThreatModel(norm="l2", eps=55).check_image_size(32)
    code = main(["eval", "--model", str(model_dir), "--data", str(ann), "--attacks", "pgd", "--eps", "4",
                 "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and "4/255" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()
    code = main(["train", "--config", str(run_yaml), "--eps", "4", "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and "4/255" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("bad", [["--batch-size", "0"], ["--attacks", "pgd", "--sanity-limit", "0"],
                                 ["--attacks", "pgd", "--attack-steps", "0"], ["--attacks", "pdg"]])
def test_eval_options_are_checked_before_any_work(bad, ann, tmp_path, capsys):
    code = main(["eval", "--model", str(tmp_path / "not-loaded"), "--data", str(ann), *bad, "--out",
                 str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and "cannot load model" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "e").exists()


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_last_checkpoint(run_yaml, tmp_path, monkeypatch,
                                                                            capsys):
    import advlora.training.checkpoint as ckpt

    real, calls = ckpt.save_file, []

    def full_disk(tensors, path):            # the second checkpoint meets a full disk, as safetensors reports it
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                               '"No space left on device" })')
        real(tensors, path)

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    run = tmp_path / "run"
    code = main(["train", "--config", str(run_yaml), "--out", str(run), "--progress", "off"])
    err = capsys.readouterr().err
    assert code == EXIT_WRITE_FAILED, err
    assert len(err.strip().splitlines()) == 1 and "No space left on device" in err
    assert "step-000002" in err and "step-000001" in err and "intact" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001"]   # no temporary folder
    monkeypatch.setattr(ckpt, "save_file", real)
    assert main(["train", "--out", str(run), "--resume", "--progress", "off"]) == 0
    assert "resumed from" in capsys.readouterr().err and (run / "metrics.json").is_file()


def test_ctrl_c_checkpoints_and_resume_continues_bit_for_bit(run_yaml, tmp_path, monkeypatch, capfd):
    from safetensors.torch import load_file

    ref = train(load_run_config(run_yaml), tmp_path / "ref")
    run = tmp_path / "run"

    def ctrl_c(step: int) -> None:
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(advlora.training, "train", functools.partial(train, on_step=ctrl_c))
    code = main(["train", "--config", str(run_yaml), "--out", str(run), "--progress", "off"])
    err = capfd.readouterr().err
    assert code == EXIT_PREEMPTED, err
    assert "stopped by SIGINT after step 2" in err and "--resume" in err and "Ctrl-C" in err
    assert (run / "checkpoints" / "step-000002").is_dir() and not (run / "metrics.json").exists()
    monkeypatch.setattr(advlora.training, "train", train)
    assert main(["train", "--out", str(run), "--resume", "--progress", "off"]) == 0
    assert "resumed from" in capfd.readouterr().err
    name = "adapter/adapter_model.safetensors"
    a, b = load_file(str(ref.run_dir / name)), load_file(str(run / name))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_resume_on_a_fresh_folder_starts_from_step_0_as_the_slurm_script_runs_it(run_yaml, tmp_path, monkeypatch,
                                                                                 capsys):
    """The job line of docs/cluster.md's sbatch script, as written, on its first and its requeued run."""
    text = (DOCS / "cluster.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("srun advlora train") and "--resume" in ln)
    argv = shlex.split(line.removeprefix("srun advlora ").removesuffix("&"))
    assert argv[:3] == ["train", "--config", "run.yaml"] and argv[-1] == "--resume"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    (tmp_path / "run.yaml").write_text(run_yaml.read_text())
    argv = [os.path.expandvars(a) for a in argv]
    assert main([*argv, "--progress", "off"]) == 0
    out = Path(os.path.expandvars("$SCRATCH/runs/a"))
    assert "no checkpoint in" in capsys.readouterr().err and (out / "metrics.json").is_file()
    assert main([*argv, "--progress", "off"]) == 0                  # requeued after it finished
    assert "resumed from" in capsys.readouterr().err
    # an empty folder made beforehand (mkdir -p in a job script) starts the same way
    (tmp_path / "empty").mkdir()
    assert main(["train", "--config", "run.yaml", "--out", "empty", "--resume", "--steps", "1",
                 "--progress", "off"]) == 0
    assert "starting from step 0" in capsys.readouterr().err
    # a folder holding something else is not a run to resume
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    assert main(["train", "--config", "run.yaml", "--out", "other", "--resume"]) == EXIT_BAD_INPUT


def test_eval_resume_on_a_missing_folder_says_it_starts_afresh(ann, model_dir, tmp_path, capsys):
    out = tmp_path / "e"
    assert main(["eval", "--model", str(model_dir), "--data", str(ann), "--limit", "2", "--attacks", "fgsm",
                 "--no-sanity", "--out", str(out), "--resume"]) == 0
    assert "no stopped evaluation" in capsys.readouterr().err and (out / "metrics.json").is_file()
    # a finished evaluation is nothing to resume
    assert main(["eval", "--model", str(model_dir), "--data", str(ann), "--attacks", "fgsm", "--out", str(out),
                 "--resume"]) == EXIT_BAD_INPUT
    assert "--overwrite" in capsys.readouterr().err


def test_a_misspelt_model_id_fails_at_once_with_did_you_mean(monkeypatch):
    import time

    from huggingface_hub import HfApi, constants

    from advlora.models import load_model

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []

    def unreachable(self, name, **kw):
        calls.append(name)
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(HfApi, "model_info", unreachable)
    t0 = time.perf_counter()
    with pytest.raises(AdvloraError, match=r"did you mean tiny-clip") as e:
        load_model("tiny-clp")
    assert time.perf_counter() - t0 < 5 and calls == ["tiny-clp"] and "\n" not in str(e.value)
    with pytest.raises(AdvloraError, match=r"did you mean openai/clip-vit-base-patch32"):
        load_model("opnai/clip-vit-base-patch32")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)       # offline: the cache answers, same hint
    with pytest.raises(AdvloraError, match=r"did you mean tiny-clip"):
        load_model("tiny-clp")


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_follow_the_umask(tmp_path, mask):
    from advlora.io import atomic_dir, write_json
    from advlora.runs import run_folder

    old = os.umask(mask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
        with run_folder(tmp_path / "r", {"a": 1}, command="test") as tmp:
            write_json(tmp / "m.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "r").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "r" / "m.json").stat().st_mode) == 0o666 & ~mask


def test_bench_checks_its_options_first_and_keeps_what_it_measured_when_it_fails_late(tmp_path, monkeypatch,
                                                                                      capsys):
    import json

    import advlora.bench as bench

    for bad in (["--suite-images", "-1"], ["--batch-size", "0"], ["--repeats", "0"], ["--retrieval-texts", "0"]):
        assert main(["bench", "--random-model", "clip:tiny", *bad, "--out", str(tmp_path / "b")]) == EXIT_BAD_INPUT
        assert bad[0] in capsys.readouterr().err and not (tmp_path / "b").exists()

    def not_with_0(*a, **k):
        raise AssertionError("--suite-images 0 leaves the suite figure out")

    def isolated(fn, *args):                   # the fresh processes, stubbed: peak memory, the retrieval figure
        if fn is bench.measure_retrieval:
            return {"retrieval_s": 1.0, "matmul_s": 1.0, "p6_eval_time": 1.0, "p6_eval_extra_gib": 0.1}
        return 2.0 ** 30

    def late(n):                               # the last figure fails, after every other one
        raise RuntimeError("the data set is empty")

    monkeypatch.setattr(bench, "measure_suite", not_with_0)
    monkeypatch.setattr(bench, "run_isolated", isolated)
    monkeypatch.setattr(bench, "have_torchattacks", lambda: True)
    monkeypatch.setattr(bench, "reduction_rows", late)
    out = tmp_path / "b"
    with pytest.raises(RuntimeError, match="empty"):
        main(["bench", "--random-model", "clip:tiny", "--batch-size", "2", "--repeats", "1", "--suite-images", "0",
              "--autoattack-images", "4", "--out", str(out)])
    kept = json.loads((out / "bench-partial.json").read_text())
    err = capsys.readouterr().err
    assert kept["p1_attack"] > 0 and kept["p2_memory_vs_full"] == 1.0 and kept["p6_eval_time"] == 1.0
    assert "bench-partial.json" in err and f"p1_attack = {kept['p1_attack']:.4g}" in err
    # what was measured reads as a table, the suite left out
    table = bench.format_bench({"details": kept, "ratios": {}, "met": dict.fromkeys(bench.TARGETS)})
    assert "suite: not run (--suite-images 0)" in table
    assert re.search(r"^p7_suite_vs_members +\(not run\)", table, re.M)


def test_a_rejected_train_leaves_nothing_and_other_commands_refuse_folders_not_theirs(run_yaml, tmp_path, capsys):
    conf = yaml.safe_load(run_yaml.read_text())
    conf["model"] = {"random": None, "name": str(tmp_path / "no-such-model")}
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(conf))
    out = tmp_path / "runs" / "t"
    code = main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(out)])
    assert code == EXIT_BAD_INPUT and "cannot load model" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for argv in (["grid", "--config", "grid-tiny-clip"], ["demo"], ["ablate"], ["pretrain"], ["attack"], ["bench"],
                 ["adapter", "init", "--random-model", "clip:test"],
                 ["adapter", "merge", "--random-model", "clip:test", "--adapter", "a"]):
        assert main([*argv, "--out", str(mine)]) == EXIT_BAD_INPUT, argv
        err = capsys.readouterr().err
        assert "advlora did not create" in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "mine"


def test_a_write_error_anywhere_is_one_line_with_its_own_exit_status(monkeypatch, capsys):
    import errno

    import advlora.cli.results as results

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/a/history.csv")

    monkeypatch.setattr(results, "run", full)
    assert main(["results", "runs"]) == EXIT_WRITE_FAILED
    err = capsys.readouterr().err
    assert err.strip() == "advlora results: error: runs/a/history.csv: No space left on device"

    def bug(args):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(results, "run", bug)
    with pytest.raises(OSError):             # not a write the user can act on: the traceback stays
        main(["results", "runs"])
