"""advlora grid through submitit's local executor: a job array, one task per train cell; a cell stopped by
SIGTERM mid-training checkpoints, is requeued and resumes; a second submission redoes nothing."""
from __future__ import annotations

import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
import yaml
from train_utils import save_test_model, write_data

from advlora.cli import main
from advlora.errors import AdvloraError

submitit = pytest.importorskip("submitit")
cloudpickle = pytest.importorskip("cloudpickle")


class StepLog:
    """The trainer's on_step hook inside the jobs: appends "pid step" to a file per process, then sleeps."""

    def __init__(self, folder: str, delay: float) -> None:
        self.folder, self.delay = folder, delay

    def __call__(self, step: int) -> None:
        with open(Path(self.folder) / f"{os.getpid()}.txt", "a") as f:
            f.write(f"{step}\n")
        time.sleep(self.delay)


def _grid(tmp_path: Path) -> dict:
    ann = write_data(tmp_path / "data", n=8)
    model = save_test_model(tmp_path / "model")   # one tokenizer for every process (a random one is not)
    return {"name": "c", "model": str(model), "datasets": [str(ann)], "seeds": [0],
            "train": {"data": {"train_split": "test", "val_split": "test", "test_split": "test"},
                      "adapter": {"rank": 2, "towers": "vision"}, "attack": {"steps": 1, "eps": "4/255"},
                      "train": {"steps": 6, "batch_size": 2, "checkpoint_every": 3, "keep_last": 3, "threads": 1}},
            "methods": [{"label": "LoRA", "method": "lora"}, {"label": "AdvLoRA", "method": "advlora"}],
            "eval": {"attacks": ["pgd"], "eps": ["4/255"], "steps": 1, "limit": 4, "sanity": False}}


def _steps(folder: Path) -> dict[str, list[int]]:
    return {p.stem: [int(x) for x in p.read_text().split()] for p in folder.glob("*.txt")}


# about 75 s on two shared cores (three job processes each import torch): in the default suite, it is issue 15's
# acceptance
def test_submitit_grid_survives_sigterm_and_resubmission(tmp_path, monkeypatch, capsys):
    from advlora.experiments import cluster
    from advlora.experiments.grid import run_cells
    from advlora.experiments.spec import load_grid_config, train_cells

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the hook travels with the pickled task
    conf = _grid(tmp_path)
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(conf))
    cfg = load_grid_config(tmp_path / "grid.yaml")
    root, log = tmp_path / "out", tmp_path / "steps"
    log.mkdir()
    jobs = cluster.submit(cfg, root, cluster.SlurmOptions(cluster="local", time_min=10),
                          on_step=StepLog(str(log), 0.5))
    assert len(jobs) == 2 and {r.state for r in cluster.status(cfg, root)} <= {"pending", "running"}

    deadline = time.time() + 240
    victim = None
    while victim is None and time.time() < deadline:          # SIGTERM a task after its step 4: past checkpoint 3
        victim = next((int(pid) for pid, s in _steps(log).items() if len(s) >= 4), None)
        time.sleep(0.05)
    assert victim is not None, [j.stderr() for j in jobs]
    os.kill(victim, signal.SIGTERM)
    for job in jobs:
        assert job.result() in {tc.key for tc in train_cells(cfg)}, job.stderr()

    rows = cluster.status(cfg, root)
    assert [r.state for r in rows] == ["done", "done"] and all(r.attempts == 1 for r in rows)
    runs = {tc.key: root / "cells" / tc.key / "run" for tc in train_cells(cfg)}
    stopped = [k for k, r in runs.items() if {p.name for p in (r / "checkpoints").iterdir()}
               - {"step-000003", "step-000006"}]
    assert len(stopped) == 1, {k: sorted(p.name for p in (r / "checkpoints").iterdir()) for k, r in runs.items()}
    k = _steps(log)[str(victim)][-1]
    assert 4 <= k < 6 and (runs[stopped[0]] / "checkpoints" / f"step-{k:06d}").is_dir()
    # every step ran once: the other cell 1..6, the stopped one 1..k before SIGTERM and k+1..6 after the requeue
    assert sorted(_steps(log).values()) == sorted([[1, 2, 3, 4, 5, 6], list(range(1, k + 1)),
                                                   list(range(k + 1, 7))])
    assert (root / "report.md").is_file()                     # the last task wrote the summary

    markers = {p: p.stat().st_mtime_ns for p in root.rglob("COMPLETE")}
    before = _steps(log)
    assert main(["grid", "--config", str(tmp_path / "grid.yaml"), "--out", str(root), "--launcher", "submitit",
                 "--submitit-cluster", "local", "--wait"]) == 0
    assert _steps(log) == before and {p: p.stat().st_mtime_ns for p in root.rglob("COMPLETE")} == markers
    assert "nothing to submit" in capsys.readouterr().out
    assert main(["grid", "--status", str(root)]) == 0
    printed = capsys.readouterr().out
    assert "2 done, 0 running, 0 failed, 0 pending of 2 cells" in printed
    assert all(str(j.job_id) in printed for j in jobs)

    # the stopped cell's adapter equals the same cell trained without interruption (here, in this process)
    cell = next(tc for tc in train_cells(cfg) if tc.key == stopped[0])
    run_cells(cfg, tmp_path / "ref", cell)
    name = "run/adapter/adapter_model.safetensors"
    assert (tmp_path / "ref" / "cells" / cell.key / name).read_bytes() == \
        (root / "cells" / cell.key / name).read_bytes()

    # a grid folder made by another config: one line naming the cause, nothing submitted
    other = {**conf, "train": {**conf["train"], "train": {**conf["train"]["train"], "steps": 7}}}
    with pytest.raises(AdvloraError, match="trained with a different configuration"):
        cluster.submit(load_grid_config(None, base=other), root, cluster.SlurmOptions(cluster="local"))


def test_cluster_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    from advlora.experiments import cluster
    from advlora.experiments.spec import load_grid_config

    with pytest.raises(AdvloraError, match="expected KEY=VALUE"):
        cluster.parse_additional(["account"])
    assert cluster.parse_additional(["account=abc", "--qos=high"]) == {"account": "abc", "qos": "high"}
    assert main(["grid", "--status", str(tmp_path)]) == 2
    assert "not a grid folder" in capsys.readouterr().err
    assert main(["grid", "--config", "x.yaml", "--launcher", "submitit", "--slurm-time", "soon"]) == 2
    assert "--slurm-time 'soon'" in capsys.readouterr().err

    # a partition sbatch refuses: sbatch's own line, nothing recorded as submitted
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    fake = bin_dir / "sbatch"
    fake.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(AdvloraError, match="submitit cannot submit here"):        # sbatch but no srun
        cluster.submit(load_grid_config(None, base={"name": "b", "random_model": "clip:test",
                                                    "methods": [{"label": "LoRA", "method": "lora"}]}),
                       tmp_path / "g0", cluster.SlurmOptions(cluster="slurm"))
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    cfg = load_grid_config(None, base={"name": "b", "random_model": "clip:test", "datasets": ["emoji"],
                                       "methods": [{"label": "LoRA", "method": "lora"}]})
    with pytest.raises(AdvloraError, match="sbatch refused the job array: sbatch: error: invalid partition"):
        cluster.submit(cfg, tmp_path / "g", cluster.SlurmOptions(cluster="slurm", partition="nope"))
    assert not (tmp_path / "g" / "jobs.json").exists()


def test_status_reads_failed_jobs_and_holds_back_a_cell_failed_three_times(tmp_path, caplog):
    import pickle

    from advlora.experiments import cluster
    from advlora.experiments.grid import start
    from advlora.experiments.spec import load_grid_config, train_cells

    cfg = load_grid_config(None, base={"name": "s", "random_model": "clip:test", "datasets": ["emoji"],
                                       "methods": [{"label": "LoRA", "method": "lora"},
                                                   {"label": "AdvLoRA", "method": "advlora"}]})
    root = tmp_path / "g"
    start(cfg, root)
    lora, adv = train_cells(cfg)
    (root / "submitit").mkdir()
    err = root / "submitit" / "7_0_log.err"
    err.write_text("Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory\n\n")
    with (root / "submitit" / "7_0_result.pkl").open("wb") as f:
        pickle.dump(("error", "Traceback ..."), f)
    jobs = {lora.key: {"job_id": "7_0", "attempts": 3, "stdout": str(root / "submitit" / "7_0_log.out"),
                       "stderr": str(err), "result": str(root / "submitit" / "7_0_result.pkl")}}
    (root / "jobs.json").write_text(__import__("json").dumps(jobs))
    rows = {r.key: r for r in cluster.status(cfg, root)}
    assert rows[lora.key].state == "failed" and rows[lora.key].last_line == "RuntimeError: CUDA out of memory"
    assert rows[adv.key].state == "pending" and rows[adv.key].job_id is None
    assert "| RuntimeError: CUDA out of memory" in cluster.status_table(list(rows.values()))

    cfg1 = load_grid_config(None, base={"name": "s", "random_model": "clip:test", "datasets": ["emoji"],
                                        "methods": [{"label": "LoRA", "method": "lora"}]})
    with caplog.at_level("ERROR"):
        assert cluster.submit(cfg1, root, cluster.SlurmOptions(cluster="local")) == []
    assert f"{lora.key}: failed 3 times (RuntimeError: CUDA out of memory)" in caplog.text
