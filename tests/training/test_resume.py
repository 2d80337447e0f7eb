"""Kill -9 a training run (the CLI, in a subprocess) after its first checkpoint, resume it, and get an adapter
bit-identical to an uninterrupted run's."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from safetensors.torch import load_file
from train_utils import save_test_model, tiny_config, write_data

from advlora.training import load_run_config, train


def _losses(path):
    with open(path, newline="") as f:
        return [(r["step"], r["loss"], r["lr"]) for r in csv.DictReader(f)]


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    ann = write_data(tmp_path / "data", n=8)            # 8 images, batch 2: 4 steps per epoch
    model = save_test_model(tmp_path / "model")
    conf = tiny_config(ann, model={"random": None, "name": str(model)},
                       adapter={"method": "advlora", "towers": "vision", "rank": 2},
                       attack={"steps": 2}, train={"steps": 10, "batch_size": 2, "checkpoint_every": 3,
                                                   "keep_last": 2},
                       eval={"val_limit": 4, "test_limit": 4, "test_steps": 1, "val_steps": 1})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(conf))
    ref = train(load_run_config(tmp_path / "run.yaml"), tmp_path / "ref")

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "killed"
    slow = Path(__file__).parents[1] / "helpers" / "slow_cli.py"          # the CLI with 0.3 s after every step
    proc = subprocess.Popen([sys.executable, str(slow), "0.3", "train", "--config", str(tmp_path / "run.yaml"),
                             "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "checkpoints" / "step-000003"
    deadline = time.time() + 120
    while not first.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.is_dir(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert done[-1] < "step-000010" and not (out / "metrics.json").exists() and not (out / "adapter").exists()

    from advlora.cli import main
    assert main(["train", "--out", str(out), "--resume", "--progress", "off"]) == 0

    for name in ("adapter/adapter_model.safetensors", "checkpoints/step-000010/trainable.safetensors"):
        a, b = load_file(str(ref.run_dir / name)), load_file(str(out / name))
        assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].equal(b[k]) for k in a), name
    assert (ref.run_dir / "adapter/adapter_model.safetensors").read_bytes() == \
        (out / "adapter/adapter_model.safetensors").read_bytes()
    assert _losses(ref.run_dir / "history.csv") == _losses(out / "history.csv")     # one run, no duplicate rows


def test_sigterm_between_checkpoints_saves_the_current_step_and_resumes_bit_identical(tmp_path):
    from advlora.preempt import PREEMPTED_EXIT

    ann = write_data(tmp_path / "data", n=8)
    model = save_test_model(tmp_path / "model")
    conf = tiny_config(ann, model={"random": None, "name": str(model)},
                       adapter={"method": "advlora", "towers": "vision", "rank": 2},
                       train={"steps": 10, "batch_size": 2, "checkpoint_every": 4, "keep_last": 3},
                       eval={"val_limit": 4, "test_limit": 4, "test_steps": 1, "val_steps": 1})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(conf))
    ref = train(load_run_config(tmp_path / "run.yaml"), tmp_path / "ref")

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "stopped"
    slow = Path(__file__).parents[1] / "helpers" / "slow_cli.py"
    proc = subprocess.Popen([sys.executable, str(slow), "0.4", "train", "--config", str(tmp_path / "run.yaml"),
                             "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(_losses(out / "history.csv") if (out / "history.csv").is_file() else []) < 5 \
            and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGTERM)                      # after step 5: past checkpoint 4, before 8
    err = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == PREEMPTED_EXIT, err[-2000:]
    steps = len(_losses(out / "history.csv"))
    done = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert 5 <= steps < 8 and done[-1] == f"step-{steps:06d}", (steps, done)    # the step it was in, saved
    assert f"stopped by SIGTERM after step {steps}" in err and not (out / "metrics.json").exists()

    from advlora.cli import main
    assert main(["train", "--out", str(out), "--resume", "--progress", "off"]) == 0
    assert (ref.run_dir / "adapter/adapter_model.safetensors").read_bytes() == \
        (out / "adapter/adapter_model.safetensors").read_bytes()
    a, b = load_file(str(ref.run_dir / "checkpoints/step-000010/trainable.safetensors")), \
        load_file(str(out / "checkpoints/step-000010/trainable.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert _losses(ref.run_dir / "history.csv") == _losses(out / "history.csv")
