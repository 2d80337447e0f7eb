"""advlora.training: the trainer for every method, its run folder, logging, attack hygiene and bad input."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from train_utils import tiny_config, write_data

from advlora.errors import AdvloraError
from advlora.training import RunConfig, load_run_config, train


@pytest.fixture
def ann(tmp_path):
    return write_data(tmp_path / "data", n=8)


def _cfg(ann, **sections) -> RunConfig:
    return load_run_config(overrides=tiny_config(ann, **sections))


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_advlora_run_folder_metrics_logs_and_efficiency(ann, tmp_path):
    cfg = _cfg(ann, adapter={"method": "advlora", "towers": "both", "align_lambda": 0.1},
               train={"steps": 4, "checkpoint_every": 2, "keep_last": 1, "tensorboard": True, "alpha_lr": 5e-3})
    res = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "manifest.json", "metrics.json", "history.csv", "epochs.csv", "efficiency.json",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000004"]        # keep_last=1
    m = json.loads((run / "metrics.json").read_text())
    assert m["threat"].startswith("linf eps=4/255 PGD steps=2") and m["robust"]["r_mean"] <= m["clean"]["r_mean"]
    assert res.metrics == m and res.steps == 4 and res.trainable_params > 0
    hist = _rows(run / "history.csv")
    assert [int(r["step"]) for r in hist] == [1, 2, 3, 4]
    assert all(math.isfinite(float(r["loss"])) and float(r["reg"]) > 0 for r in hist)
    alpha_cols = [k for k in hist[0] if k.startswith("alpha/")]
    assert alpha_cols and {"alpha_mean/vision", "alpha_mean/text"} <= set(hist[0])
    assert float(hist[0]["alpha_lr"]) != float(hist[0]["lr"])                        # alpha's own group
    assert any(float(hist[-1][c]) != float(hist[0][c]) for c in alpha_cols)          # alpha is trained
    epochs = _rows(run / "epochs.csv")                  # 8 images / batch 4: 2 steps per epoch, 2 epochs
    assert [int(r["epoch"]) for r in epochs] == [0, 1] and all(r["robust_r_mean"] for r in epochs)
    eff = json.loads((run / "efficiency.json").read_text())
    assert eff["trainable"] == res.trainable_params and eff["peak_memory_mb"] > 0
    assert set(eff["step_time_s"]) == {"data", "attack", "forward_backward", "optimizer", "total"}
    assert eff["step_time_s"]["attack"] > 0


@pytest.mark.parametrize("method", ["frozen", "full", "lora", "pissa"])
def test_every_method_trains(ann, tmp_path, method):
    res = train(_cfg(ann, adapter={"method": method}, train={"steps": 2}), tmp_path / method)
    assert set(res.metrics) >= {"clean", "robust", "threat"}
    if method == "frozen":
        assert res.trainable_params == 0 and res.steps == 0 and not (tmp_path / method / "adapter").exists()
    else:
        assert res.steps == 2 and res.trainable_params > 0 and (tmp_path / method / "adapter").is_dir()


@pytest.mark.parametrize("attack", [{"name": "none"}, {"name": "fgsm"}, {"name": "apgd"},
                                    {"loss": "trades", "beta": 2.0}, {"loss": "mix"}])
def test_training_variants(ann, tmp_path, attack):
    res = train(_cfg(ann, attack=attack, train={"steps": 2}), tmp_path / "run")
    hist = _rows(tmp_path / "run" / "history.csv")
    assert len(hist) == 2 and all(math.isfinite(float(r["loss"])) for r in hist)
    assert (float(hist[0]["kl"]) >= 0) if attack.get("loss") == "trades" else hist[0]["kl"] == ""
    assert ("clean training" == res.metrics["train_attack"]) == (attack.get("name") == "none")


def test_blip_trains_itc_and_itm(ann, tmp_path):
    cfg = _cfg(ann, model={"random": "blip:test"}, adapter={"method": "lora", "towers": "both"}, train={"steps": 2},
               eval={"rerank_k": 0})
    train(cfg, tmp_path / "run")
    hist = _rows(tmp_path / "run" / "history.csv")
    assert all(float(r["itm"]) > 0 for r in hist)


def test_attack_leaves_no_parameter_grad_and_restores_mode(ann):
    from advlora.adapters import attach_adapter
    from advlora.attacks import ThreatModel
    from advlora.models.tiny import random_model
    from advlora.training.config import AttackConfig
    from advlora.training.step import attack_batch

    model = random_model("clip", "test").requires_grad_(False)
    attach_adapter(model, "lora", rank=2)
    model.train()
    clean = torch.rand(3, 3, 32, 32)
    text = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    adv = attack_batch(model, AttackConfig(threat=ThreatModel(eps="8/255", steps=3)), clean, text,
                       torch.eye(3, dtype=torch.bool), torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training for m in model.modules())
    assert (adv - clean).abs().max() <= 8 / 255 + 1e-6 and (adv - clean).abs().max() > 0


def test_text_features_are_not_recomputed_inside_attack_steps(ann, tmp_path, monkeypatch):
    from advlora.models.clip import CLIPWrapper

    calls = []
    orig = CLIPWrapper.encode_text
    monkeypatch.setattr(CLIPWrapper, "encode_text", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    counts = []
    for steps in (1, 4):
        calls.clear()
        train(_cfg(ann, attack={"steps": steps}, train={"steps": 2}, eval={"robust": False}), tmp_path / f"r{steps}")
        counts.append(len(calls))
    assert counts[0] == counts[1]          # the attack's step count does not change the text encoder calls


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(ann, tmp_path, monkeypatch):
    from advlora.models.clip import CLIPWrapper

    orig, n = CLIPWrapper.contrastive_loss, []   # the family's loss, which the training step calls

    def bad(*a, **k):
        n.append(1)
        return orig(*a, **k) * (float("nan") if len(n) == 3 else 1.0)

    monkeypatch.setattr(CLIPWrapper, "contrastive_loss", bad)
    with pytest.raises(AdvloraError,
                       match=r"non-finite loss \(nan\) at step 3; the last good checkpoint is .*step-000002"):
        train(_cfg(ann, train={"steps": 4, "checkpoint_every": 1, "keep_last": 5}), tmp_path / "run")
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-000001", "step-000002"]
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "adapter").exists()


def test_unwritable_run_folder_is_one_line_and_writes_nothing(ann, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AdvloraError, match="cannot create run folder"):
        train(_cfg(ann), blocker / "run")
    assert blocker.read_text() == "x" and sorted(tmp_path.iterdir()) == [tmp_path / "data", blocker]


def test_malformed_eps_is_one_line_before_any_run_folder(ann, tmp_path, capsys):
    from advlora.cli import main

    assert main(["train", "--data", str(ann), "--model", "tiny-clip", "--eps", "abc", "--steps", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "malformed attack.eps 'abc'" in err and "Traceback" not in err and not (tmp_path / "run").exists()


def test_resume_from_another_config_names_the_fields(ann, tmp_path):
    train(_cfg(ann, train={"steps": 2, "checkpoint_every": 1}), tmp_path / "run")
    with pytest.raises(AdvloraError, match=r"differs in: adapter.rank, train.lr"):
        train(_cfg(ann, adapter={"rank": 1}, train={"steps": 2, "lr": 1e-2}), tmp_path / "run", resume=True)
    with pytest.raises(AdvloraError, match="already holds a training run"):
        train(_cfg(ann, train={"steps": 2}), tmp_path / "run")


def test_base_model_passed_in_is_reused_not_modified(ann, tmp_path):
    from advlora.models.tiny import random_model

    base = random_model("clip", "test").requires_grad_(False)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = _cfg(ann, adapter={"method": "full"}, train={"steps": 2, "lr": 1e-2})
    train(cfg, tmp_path / "a", model=base)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert not any(p.requires_grad for p in base.parameters())


def test_sampler_is_a_function_of_the_step_and_marks_shared_captions():
    from advlora.data.dataset import RetrievalDataset
    from advlora.training.data import EpochSampler

    caps = ["a", "b", "c", "d", "a", "e"]            # caption "a" belongs to images 0 and 2
    ds = RetrievalDataset("/", ["0", "1", "2", "3", "4"], caps, [0, 1, 2, 3, 2, 4])
    s1, s2 = EpochSampler(ds, 2, seed=3), EpochSampler(ds, 2, seed=3)
    assert s1.steps_per_epoch == 2 and s1.position(5) == (2, 1)
    seq = [s1.batch(k).images.tolist() for k in range(6)]
    assert [s2.batch(k).images.tolist() for k in (5, 0, 3, 1, 4, 2)] == [seq[k] for k in (5, 0, 3, 1, 4, 2)]
    assert sorted(seq[0] + seq[1]) != sorted(range(5)) or len(set(seq[0] + seq[1])) == 4
    pos = s1.positives(torch.tensor([0, 2, 1]), torch.tensor([0, 4, 1]))     # both captions read "a"
    assert pos.tolist() == [[True, True, False], [True, True, False], [False, False, True]]


def test_cli_flags_yaml_and_dotted_overrides(ann, tmp_path, capsys):
    import yaml

    from advlora.cli import main

    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tiny_config(ann)))
    code = main(["train", "--config", str(tmp_path / "run.yaml"), "--method", "advlora", "--steps", "2",
                 "--eps", "2/255", "--out", str(tmp_path / "out"), "--train.lr", "2e-3", "--adapter.rank=1"])
    assert code == 0
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert (saved["adapter"]["method"], saved["adapter"]["rank"], saved["train"]["lr"], saved["attack"]["eps"]) == \
        ("advlora", 1, 2e-3, "2/255")
    assert "r_mean" in capsys.readouterr().out
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--train.lrr", "1", "--out",
                 str(tmp_path / "o2")]) == 2
    assert "unknown config key train.'lrr'" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_shipped_configs_load():
    from importlib import resources

    names = [p.name for p in resources.files("advlora.configs").iterdir() if p.name.startswith("advlora-")]
    assert names
    for name in names:
        cfg = load_run_config(resources.files("advlora.configs") / name)
        assert cfg.method in ("advlora", "lora", "full", "pissa", "frozen") and cfg.attack.name == "pgd"


def test_a_switch_that_is_not_true_or_false_is_one_line_before_any_run_folder(ann, tmp_path, capsys):
    """`--model.gradient_checkpointing maybe` once counted as on and started a whole training."""
    from advlora.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", str(ann), "--model.gradient_checkpointing", "maybe", "--out", str(out)]) == 2
    assert "model.gradient_checkpointing: expected true or false, got 'maybe'" in capsys.readouterr().err
    assert not out.exists()
    assert load_run_config(overrides=["--model.gradient_checkpointing", "true"]).model.gradient_checkpointing is True


def test_numbers_given_as_text_are_converted_by_the_field_type():
    from advlora.training import load_run_config

    cfg = load_run_config(None, {"train": {"lr": "1e-3", "steps": "5"}, "adapter": {"rank": "4"}})
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 5 and isinstance(cfg.train.steps, int) and cfg.adapter.rank == 4
    cfg = load_run_config(None, ["--train.lr", "1e-3", "--attack.steps", "4", "--attack.eps", "4/255"])
    assert cfg.train.lr == 1e-3 and cfg.attack.threat.steps == 4 and cfg.attack.threat.eps == 4 / 255
    assert cfg.adapter.seed == cfg.train.seed == 0 and load_run_config(None, ["--train.seed", "3"]).adapter.seed == 3
    # a section setting some threat fields keeps the training defaults (PGD-3 at 2/255) for the others
    assert load_run_config(None, ["--attack.eps", "4/255"]).attack.threat.steps == 3
    assert load_run_config(None, {"attack": {"threat": {"steps": 5}}}).attack.threat.eps == 2 / 255
    assert load_run_config(None).attack.threat == load_run_config(None, {"attack": {"name": "pgd"}}).attack.threat


def test_malformed_number_override_is_one_line_and_exit_2(ann, tmp_path, capsys):
    from advlora.cli import main

    for args, msg in ((["--train.lr", "fast"], "train.lr must be a number, got 'fast'"),
                      (["--train.steps", "2.5"], "train.steps must be an integer, got 2.5"),
                      (["--adapter.rank", "x"], "adapter.rank must be an integer, got 'x'")):
        assert main(["train", "--data", str(ann), "--out", str(tmp_path / "run"), *args]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists(), err


def test_checkpoint_is_accelerate_state_with_only_the_trainable_tensors(ann, tmp_path):
    from safetensors.torch import load_file

    from advlora.training import load_run_config, train

    res = train(load_run_config(None, tiny_config(ann, adapter={"method": "advlora", "rank": 2, "towers": "vision"},
                                                  train={"steps": 2, "checkpoint_every": 1, "keep_last": 1})),
                tmp_path / "run")
    folders = sorted((res.run_dir / "checkpoints").iterdir())
    assert [p.name for p in folders] == ["step-000002"]                              # keep_last 1
    assert {p.name for p in folders[0].iterdir()} == {"trainable.safetensors", "optimizer.bin", "random_states_0.pkl",
                                                      "objects.pt", "adapter"}
    # the schedule and the trainer's state read back without unpickling (weights_only)
    assert len(torch.load(folders[0] / "objects.pt", weights_only=True)) == 2
    saved = load_file(str(folders[0] / "trainable.safetensors"))
    assert saved and all("lora_" in k or k.endswith("advlora_alpha") for k in saved)  # no frozen weight


def test_stop_requests_turn_signals_into_a_flag_and_restore_handlers():
    import os
    import signal

    from advlora.preempt import SIGNALS, stop_requests

    before = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        with stop_requests() as stop:
            assert not stop
            os.kill(os.getpid(), s)
            assert stop and stop.signum == s
    assert {s: signal.getsignal(s) for s in SIGNALS} == before


def test_loader_settings_are_config_keys(tmp_path):
    """data.loader.* reaches the trainer's batch source: a malformed one is one line, a streamed run trains."""
    from advlora.errors import AdvloraError
    from advlora.training import load_run_config

    cfg = load_run_config(None, ["--data.loader.storage", "stream", "--data.loader.workers", "0"])
    assert cfg.data.loader.storage == "stream" and cfg.data.loader.workers == 0
    with pytest.raises(AdvloraError, match="storage"):
        load_run_config(None, ["--data.loader.storage", "disk"])
