"""Distributed and resumable robust evaluation: per-sample seeding makes results independent of the batch
size and of the split across processes; `torchrun --nproc_per_node 2 -m advlora eval` equals one process
sample by sample; a stopped evaluation resumes from its finished batches with the same metrics; progress
lines."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_utils import save_test_model, torchrun, write_data

from advlora.attacks import ThreatModel
from advlora.data import load_dataset
from advlora.evaluation import distributed
from advlora.evaluation import robust as R
from advlora.evaluation.progress import BatchProgress
from advlora.preempt import PREEMPTED_EXIT, StopRequest


@pytest.fixture(scope="module")
def ann(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("dist_data"), n=10)


def _per_sample(model, data, name: str, threat: ThreatModel, batch_size: int, **options):
    """Adversarial images and per-sample (i2t rank, t2i ranks) of attack ``name``, batched by ``batch_size``."""
    from advlora.attacks import registry

    with R.attack_mode(model):
        ctx = R.context(model, data, 0)
        adv = R.attack_images(ctx, registry.get(name), threat, R.EvalPlan(batch_size=batch_size),
                              generator=torch.Generator().manual_seed(threat.seed), options=options).images
        return adv.rows(torch.arange(len(adv))), R.measure(ctx, adv)["ranks"]


@pytest.mark.parametrize("name,options", [("pgd", {}), ("square", {"queries": 30})])
def test_per_sample_seeding_is_independent_of_batch_size(tiny_clip, ann, name, options):
    data = load_dataset(str(ann))
    th = ThreatModel(eps="16/255", steps=3, restarts=2, seed=5)
    adv3, ranks3 = _per_sample(tiny_clip, data, name, th, 3, **options)
    adv8, ranks8 = _per_sample(tiny_clip, data, name, th, 8, **options)
    assert torch.equal(ranks3[0], ranks8[0]) and torch.equal(ranks3[1], ranks8[1])
    assert float((adv3 - adv8).abs().max()) < 1e-6
    clean = data.load_images(tiny_clip.image_size)
    assert float((adv3 - clean).abs().max()) > 1e-3                       # the attack did move the images
    other, _ = _per_sample(tiny_clip, data, name, th.replace(seed=6), 8, **options)
    assert float((other - adv8).abs().max()) > 1e-3                       # and the seed matters
    full3 = R.evaluate_robust(tiny_clip, data, [name], th, batch_size=3, sanity=False, options=options)
    full8 = R.evaluate_robust(tiny_clip, data, [name], th, batch_size=8, sanity=False, options=options)
    assert full3["attacks"][name]["metrics"] == full8["attacks"][name]["metrics"]


def test_shard_covers_every_index_once():
    idx = torch.arange(11)
    parts = [distributed.shard(idx, r, 3) for r in range(3)]
    assert torch.equal(torch.cat(parts), idx) and [len(p) for p in parts] == [3, 4, 4]


def test_progress_log_line_and_bar():
    buf = io.StringIO()
    p = BatchProgress("pgd", 4, mode="log", interval=0.0, stream=buf)
    for _ in range(4):
        p.update()
    p.close()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("pgd: batch 1/4, ") and "ETA" in lines[0]
    assert lines[-1].startswith("pgd: batch 4/4, ") and len(lines) == 4     # the last line not repeated
    assert BatchProgress("x", 2, stream=io.StringIO()).mode == "log"      # auto, not a terminal: the log


def test_stopped_evaluation_resumes_with_the_same_metrics(tiny_clip, ann, tmp_path):
    data = load_dataset(str(ann))
    th = ThreatModel(eps="16/255", steps=2, seed=1)
    kw = dict(batch_size=3, sanity=False, ensemble=True)
    ref = R.evaluate_robust(tiny_clip, data, ["pgd", "fgsm"], th, **kw)
    stop = StopRequest()
    calls = []

    class Stopper(distributed.EvalSession):      # a stop signal arrives during the second batch of pgd
        def _check_stop(self):
            calls.append(1)
            if len(calls) == 2:
                stop.signum = signal.SIGTERM
            super()._check_stop()

    state = tmp_path / "state"
    with pytest.raises(distributed.EvalPreempted) as e, Stopper(state=state, stop=stop, fingerprint={"a": 1}):
        R.evaluate_robust(tiny_clip, data, ["pgd", "fgsm"], th, **kw)
    assert "after 2 batches" in str(e.value)
    saved = sorted((state / "001-pgd").glob("*.safetensors"))
    assert len(saved) == 2                                           # the finished batches, no more
    with distributed.EvalSession(state=state, resume=True, fingerprint={"a": 1}) as s:
        again = R.evaluate_robust(tiny_clip, data, ["pgd", "fgsm"], th, **kw)
    assert s.restored == 6                                           # 2 batches of 3 were not redone
    for k in ("pgd", "fgsm"):
        assert again["attacks"][k]["metrics"] == ref["attacks"][k]["metrics"]
    assert again["ensemble"]["metrics"] == ref["ensemble"]["metrics"]
    with pytest.raises(Exception, match="other settings"):
        distributed.EvalSession(state=state, resume=True, fingerprint={"a": 2}).__enter__()


def _eval_cmd(model, ann, out, *extra) -> list[str]:
    return ["eval", "--model", str(model), "--data", str(ann), "--attacks", "pgd,square",
            "--eps", "16/255", "--attack-steps", "3", "--restarts", "2", "--square-queries", "20", "--batch-size", "3",
            "--sanity-limit", "4", "--device", "cpu", "--out", str(out), *extra]


def test_torchrun_two_processes_equal_one_process(ann, tmp_path):
    model = save_test_model(tmp_path / "model")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "advlora", *_eval_cmd(model, ann, tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(torchrun(*_eval_cmd(model, ann, tmp_path / "two")), env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in two.stdout
    a = json.loads((tmp_path / "one" / "metrics.json").read_text())
    b = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for key in ("clean", "robust", "sanity", "verdict"):
        assert _without_seconds(a[key]) == _without_seconds(b[key]), key
    for folder, processes in (("one", 1), ("two", 2)):    # each run folder says how it ran
        ex = json.loads((tmp_path / folder / "manifest.json").read_text())["execution"]
        assert (ex["processes"], ex["device"], ex["dtype"]) == (processes, "cpu", "float32"), ex
    for key in ("pgd@16/255", "square@16/255"):          # per sample: every image's and caption's rank
        assert a["robust"][key]["ranks"]["i2t"] == b["robust"][key]["ranks"]["i2t"]
        assert len(b["robust"][key]["ranks"]["i2t"]) == 10 and len(b["robust"][key]["ranks"]["t2i"]) == 20
    table = [ln for ln in one.stdout.splitlines() if ln.startswith(("clean", "pgd", "square"))]
    assert table and table == [ln for ln in two.stdout.splitlines() if ln.startswith(("clean", "pgd", "square"))]


def _without_seconds(x):
    if isinstance(x, dict):
        return {k: _without_seconds(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [_without_seconds(v) for v in x]
    return x


def test_cli_sigterm_exits_75_and_resume_prints_the_same_metrics(ann, tmp_path):
    model = save_test_model(tmp_path / "model")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "advlora", *_eval_cmd(model, ann, tmp_path / "run", "--no-sanity")]
    ref = subprocess.run([*cmd, "--out", str(tmp_path / "ref")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    slow_eval = Path(__file__).parents[1] / "helpers" / "slow_eval.py"
    slow = [sys.executable, str(slow_eval), "2", *cmd[3:]]   # 2 s after each batch
    proc = subprocess.Popen(slow, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "run" / "eval-state"
    deadline = time.time() + 120
    while not list(state.glob("*/*.safetensors")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT, err[-3000:]
    assert "--resume" in err and not (tmp_path / "run" / "metrics.json").exists()
    assert 1 <= len(list(state.glob("*/*.safetensors"))) < 4 + 4          # stopped before the end (pgd, square)
    res = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed" in res.stdout
    a = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    b = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert _without_seconds(a["robust"]) == _without_seconds(b["robust"])
    assert not state.exists()                                  # the finished run folder holds no partial state
