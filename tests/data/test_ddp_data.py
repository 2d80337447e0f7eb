"""The data path under DDP on CPU (torchrun, gloo): 2 ranks x 2 DataLoader workers.

- A training streamed from disk by workers (map-style, augmented), its whole process group killed with SIGKILL
  after a checkpoint, then resumed, ends bit-identical to the same 2-rank run left alone.
- A training from shards written by ``advlora data shard``, in exact-epoch mode, visits every sample of the source
  exactly once per epoch across the 2 ranks x 2 workers: the trainer counts the real samples of each epoch over
  all ranks and adds up their key hashes (``efficiency.json`` "epochs"), and the test compares both with the
  source's keys.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import yaml
from safetensors.torch import load_file
from train_utils import save_test_model, tiny_config, torchrun, write_data

from advlora.cli import main
from advlora.data.shards import key_digest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_ranks_two_workers_sigkill_then_resume_is_bit_identical(tmp_path):
    ann = write_data(tmp_path / "data", n=16)
    model = save_test_model(tmp_path / "model")
    conf = tiny_config(ann, model={"random": None, "name": str(model)},
                       data={"loader": {"storage": "stream", "workers": 2, "augment": True}},
                       adapter={"method": "advlora", "towers": "vision", "rank": 2}, attack={"steps": 1},
                       train={"steps": 8, "batch_size": 4, "checkpoint_every": 3, "keep_last": 2},
                       eval={"val_limit": 4, "test_limit": 4, "test_steps": 1, "val_steps": 1})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(conf))
    _run(torchrun("train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "ref")))

    out = tmp_path / "killed"
    slow = str(Path(__file__).parents[1] / "helpers" / "slow_cli.py")        # the CLI with 0.3 s after every step
    proc = subprocess.Popen(torchrun("train", "--config", str(tmp_path / "run.yaml"), "--out", str(out),
                                      script=[slow, "0.3"]),
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    first = out / "checkpoints" / "step-000003"
    deadline = time.time() + 300
    while not (first / "trainable.safetensors").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.is_dir(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)          # the agent, both ranks and their workers at once
    proc.wait()
    assert not (out / "metrics.json").exists() and not (out / "adapter").exists()

    _run(torchrun("train", "--out", str(out), "--resume", "--progress", "off"))
    for name in ("adapter/adapter_model.safetensors", "checkpoints/step-000008/trainable.safetensors"):
        a, b = load_file(str(tmp_path / "ref" / name)), load_file(str(out / name))
        assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].equal(b[k]) for k in a), name
    eff = json.loads((out / "efficiency.json").read_text())
    assert eff["processes"] == 2


def test_exact_epochs_from_shards_visit_every_sample_once_in_training(tmp_path):
    ann = write_data(tmp_path / "data", n=16)
    model = save_test_model(tmp_path / "model")
    assert main(["data", "shard", str(ann), "--split", "test", "--out", str(tmp_path / "shards"),
                 "--per-shard", "3"]) == 0                # 6 shards of 3, 3, 3, 3, 3, 1: unequal readers, padding
    conf = tiny_config(ann, model={"random": None, "name": str(model)}, data={"loader": {"workers": 2}},
                       train={"steps": None, "epochs": 2, "batch_size": 4},
                       eval={"val_limit": 4, "test_limit": 4, "test_steps": 1, "val_steps": 1})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(conf))
    _run(torchrun("train", "--config", str(tmp_path / "run.yaml"), "--data",
                   str(tmp_path / "shards" / "shard-{00000..00005}.tar"), "--eval-data", str(ann),
                   "--out", str(tmp_path / "run")))
    eff = json.loads((tmp_path / "run" / "efficiency.json").read_text())
    assert eff["processes"] == 2
    expected = {"samples": 16, "key_digest": key_digest(f"{i:09d}" for i in range(16))}
    assert {e: {k: v for k, v in c.items() if k != "padding"} for e, c in eff["epochs"].items()} == \
        {"0": expected, "1": expected}, eff["epochs"]
    steps = json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"]
    assert sum(c["samples"] + c["padding"] for c in eff["epochs"].values()) == steps * 4   # every row accounted


def test_one_failing_rank_ends_the_job_instead_of_hanging(tmp_path):
    """Rank 1 raises after a step while rank 0 goes on into the next step's collectives: the job must exit
    non-zero promptly (a rank that waited at a barrier on its way out kept both ranks blocked until the
    process-group timeout, 30 minutes)."""
    ann = write_data(tmp_path / "data", n=8)
    model = save_test_model(tmp_path / "model")
    conf = tiny_config(ann, model={"random": None, "name": str(model)}, train={"steps": 6, "batch_size": 4},
                       eval={"val_limit": 4, "test_limit": 4, "test_steps": 1, "val_steps": 1})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(conf))
    fail = str(Path(__file__).parents[1] / "helpers" / "fail_rank_cli.py")
    proc = subprocess.Popen(torchrun("train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run"),
                                     script=[fail, "1", "1"]),
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("one failing rank left the job hanging") from None
    assert proc.returncode != 0 and "injected failure on rank 1 after step 1" in err, err[-2000:]
