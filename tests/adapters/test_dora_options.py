"""AdvLoRA's parts as options of DoRA (``init=cluster``, ``trainable_alpha``): AdvLoRA's own initialisation and
alpha on peft's DoRA layers, its optimiser group in a training run, the CLI, and folders written before the options.
The acceptance checks every method passes (peft load, merge, resume, unsupported layers, every objective) run on
``dora`` with both options in tests/adapters/test_adapter_methods.py (the ``dora-cluster-alpha`` variant)."""
from __future__ import annotations

import copy
import csv
import json

import pytest
import torch
from train_utils import nudge

_BASE: dict = {}


def fresh():
    if not _BASE:
        from advlora.models.tiny import random_model

        _BASE["clip"] = random_model("clip", "test", seed=0)
    return copy.deepcopy(_BASE["clip"])


@torch.no_grad()
def features(m):
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return torch.cat([m.encode_image(x), m.encode_text(["red apple", "rocket"])])


def test_init_cluster_is_advlora_s_initialisation_on_a_dora_layer():
    """The factors are AdvLoRA's (the same k-means + alignment of W0), the base is W0 - s B0 A0, the magnitude
    ||W0|| per row: the output starts unchanged, and only A, B, m train (alpha fixed at 1)."""
    from advlora.adapters import adapter_info, alpha_parameters, attach_adapter, lora_layers

    base = fresh()
    w0 = {n: m.weight.detach().clone() for n, m in base.hf_model.named_modules() if isinstance(m, torch.nn.Linear)}
    adv = attach_adapter(fresh(), "advlora", rank=2, seed=3)
    dora = attach_adapter(fresh(), "dora", rank=2, seed=3, init="cluster")
    assert (features(dora) - features(base)).abs().max() <= 1e-5
    assert adapter_info(dora)["init"] == "cluster" and not alpha_parameters(dora)
    for n, lay in lora_layers(dora).items():
        ref = lora_layers(adv)[n]
        assert torch.equal(lay.advlora_A0, ref.advlora_A0) and torch.equal(lay.advlora_B0, ref.advlora_B0)
        assert torch.allclose(lay.get_base_layer().weight + lay.scaling["default"] * lay.advlora_B0 @ lay.advlora_A0,
                              w0[n], atol=1e-5)
        assert torch.allclose(lay.lora_magnitude_vector["default"].weight, w0[n].norm(dim=1), atol=1e-5)
    trainable = {n.split(".")[-3 if n.endswith(".weight") else -2] for n, p in dora.named_parameters()
                 if p.requires_grad}
    assert trainable == {"lora_A", "lora_B", "lora_magnitude_vector"}
    assert dora.advlora_adapter.report[0]["error"] == adv.advlora_adapter.report[0]["error"]


@pytest.mark.parametrize("alpha_mode,count", [("layer", 16), ("tower", 2), ("shared", 1)])
def test_trainable_alpha_scales_the_dora_branch_and_is_the_alpha_group(alpha_mode, count):
    from advlora.adapters import adapter_info, alpha_parameters, alpha_values, attach_adapter, lora_layers

    m = attach_adapter(fresh(), "dora", rank=2, trainable_alpha=True, alpha_mode=alpha_mode, alpha_init=0.5)
    alphas = alpha_parameters(m)
    assert len(alphas) == count and all(float(a.detach()) == 0.5 for a in alphas)
    assert set(alpha_values(m)) == set(lora_layers(m)) and adapter_info(m)["alpha_mode"] == alpha_mode
    nudge(m)
    before = features(m)
    with torch.no_grad():
        for a in alphas:
            a.fill_(0.0)                     # no branch left: m / ||W0|| * W0 x, and m moved by the nudge
    off = features(m)
    with torch.no_grad():
        for lay in lora_layers(m).values():
            lay.lora_B["default"].weight.zero_()
    assert (features(m) - off).abs().max() <= 1e-6                                     # alpha 0: B A does not act
    assert (before - off).abs().max() > 1e-3                                           # alpha scales the branch


def test_the_options_are_validated_when_the_config_is_built():
    from advlora.adapters import AdapterConfig
    from advlora.errors import AdvloraError

    assert AdapterConfig(method="dora").init == "peft" and not AdapterConfig(method="dora").trainable_alpha
    for bad, match in ((dict(trainable_alpha=True, alpha_mode="fixed"), "alpha_mode=fixed"),
                       (dict(init="olora"), "unknown adapter init 'olora'"),
                       (dict(trainable_alpha="yes"), "trainable_alpha must be true or false")):
        with pytest.raises(AdvloraError, match=match) as e:
            AdapterConfig(method="dora", **bad)
        assert len(str(e.value).splitlines()) == 1


def test_a_dora_folder_written_before_the_options_loads_as_plain_dora(tmp_path):
    """advlora.json of a DoRA adapter saved when the method had no init and no trainable_alpha."""
    from advlora.adapters import adapter_info, attach_adapter, load_adapter, lora_layers, save_adapter

    m = attach_adapter(fresh(), "dora", rank=2)
    nudge(m)
    save_adapter(m, tmp_path / "ad")
    meta = json.loads((tmp_path / "ad" / "advlora.json").read_text())
    meta["config"]["init"] = None
    del meta["config"]["trainable_alpha"]
    (tmp_path / "ad" / "advlora.json").write_text(json.dumps(meta))
    assert not (tmp_path / "ad" / "advlora_state.safetensors").exists()                # peft's files alone
    back = load_adapter(fresh(), tmp_path / "ad")
    assert adapter_info(back)["init"] == "peft"
    assert not hasattr(next(iter(lora_layers(back).values())), "advlora_alpha")      # peft's own layers
    assert (features(back) - features(m)).abs().max() <= 1e-5


def test_a_run_trains_dora_s_alpha_in_its_own_group_and_the_cli_writes_it(tmp_path, capsys):
    from train_utils import tiny_config, write_data

    from advlora.cli import main
    from advlora.training import load_run_config, train

    ann = write_data(tmp_path / "data", n=8)
    conf = tiny_config(ann, adapter={"method": "dora", "rank": 2, "towers": "vision", "init": "cluster",
                                     "trainable_alpha": True, "alpha_mode": "tower"},
                       train={"steps": 3, "batch_size": 4, "alpha_lr": 5e-2},
                       eval={"val_limit": 4, "test_limit": 4, "test_steps": 1, "val_steps": 1})
    train(load_run_config(None, base=conf), tmp_path / "run")
    with open(tmp_path / "run" / "history.csv", newline="") as f:
        hist = list(csv.DictReader(f))
    cols = [k for k in hist[0] if k.startswith("alpha/")]
    assert cols and {float(r["alpha_lr"]) for r in hist} != {float(r["lr"]) for r in hist}   # alpha's own group
    assert any(float(hist[-1][c]) != 1.0 for c in cols)                                      # alpha trained
    assert main(["adapter", "init", "--random-model", "clip:test", "--method", "dora", "--init", "cluster",
                 "--trainable-alpha", "--rank", "2", "--out", str(tmp_path / "ad")]) == 0
    assert "dora: 2,576 trainable parameters" in capsys.readouterr().out                # + one alpha per layer
    cfg = json.loads((tmp_path / "ad" / "advlora.json").read_text())["config"]
    assert (cfg["init"], cfg["trainable_alpha"], cfg["alpha_mode"]) == ("cluster", True, "layer")
    assert json.loads((tmp_path / "ad" / "adapter_config.json").read_text())["use_dora"] is True
