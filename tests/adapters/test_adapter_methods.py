"""Adapter methods as declarations: nothing outside ``advlora.adapters.methods`` compares a method's name; a
throw-away method declared in this file alone trains, is attacked, saves, loads and merges through the CLI."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from name_scan import comparisons, mentions
from train_utils import nudge

from advlora.adapters import method as adapter_methods

SRC = Path(__file__).resolve().parents[2] / "src" / "advlora"
METHODS_PACKAGE = SRC / "adapters" / "methods"


def name_comparisons(source: str, names: set[str]) -> list[str]:
    """The comparisons in ``source`` of something named like a method (``method``, ``cfg.method``, ...) with a
    method's name (or a tuple / list / set holding one), as 'line: text'."""
    return comparisons(source, names, lambda named, others: any(mentions(s, "method") for s in others))


def test_the_detector_finds_a_method_name_comparison():
    names = {"advlora", "frozen", "lora"}
    src = ("if cfg.method == 'advlora': pass\nif method != 'frozen': pass\nif m.method.method in ('lora', 'x'): pass\n"
           "if scope == 'full': pass\nif adapter_methods.get(cfg.method).trains: pass\n")
    assert [f.split(":")[0] for f in name_comparisons(src, names)] == ["1", "2", "3"]


def test_no_module_outside_the_methods_package_compares_a_method_name():
    names = set(adapter_methods.choices())
    assert {"frozen", "full", "lora", "advlora", "pissa"} <= names
    hits = [f"{p.relative_to(SRC)}:{hit}" for p in sorted(SRC.rglob("*.py")) if METHODS_PACKAGE not in p.parents
            for hit in name_comparisons(p.read_text(encoding="utf-8"), names)]
    assert not hits, "\n".join(hits)


# ---- a throw-away method, declared in this file alone --------------------------------------------------------
class ScaledLinear(torch.nn.Module):
    """``base(x) * scale``: one trainable scale per output of a frozen Linear (an IA3-like vector)."""

    def __init__(self, base: torch.nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.scale = torch.nn.Parameter(torch.ones(base.out_features, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * self.scale


class OutputScale(adapter_methods.AdapterMethod):
    name = "outscale"
    summary = "a trainable scale per output of each target layer (a test's throw-away method)"
    reads = ("towers", "targets")

    def attach(self, model, cfg, state, names, saved=None) -> None:
        for n in names:
            parent, _, child = n.rpartition(".")
            owner = model.hf_model.get_submodule(parent)
            setattr(owner, child, ScaledLinear(getattr(owner, child)))

    def save(self, model, state, folder, meta) -> None:
        from safetensors.torch import save_file

        save_file({n: model.hf_model.get_submodule(n).scale.detach().cpu().contiguous() for n in state.layers},
                  str(folder / "scales.safetensors"))

    def load(self, model, state, folder, meta) -> None:
        from safetensors.torch import load_file

        with torch.no_grad():
            for n, t in load_file(str(folder / "scales.safetensors")).items():
                model.hf_model.get_submodule(n).scale.copy_(t)

    def merge(self, model, state) -> None:
        with torch.no_grad():
            for n in state.layers:
                lay = model.hf_model.get_submodule(n)
                lay.base.weight.mul_(lay.scale[:, None])
                if lay.base.bias is not None:
                    lay.base.bias.mul_(lay.scale)
                parent, _, child = n.rpartition(".")
                setattr(model.hf_model.get_submodule(parent), child, lay.base)


def test_a_new_method_is_one_declaration(tmp_path, capsys):
    """The method above trains, is evaluated under attack, saves, loads and merges through the CLI."""
    from safetensors.torch import load_file
    from train_utils import write_data

    from advlora.cli import main
    from advlora.models import load_model, save_model
    from advlora.models.tiny import random_model

    ann = write_data(tmp_path / "data", n=8)
    save_model(random_model("clip", "test", seed=0), tmp_path / "base")
    run, ev, merged = tmp_path / "run", tmp_path / "ev", tmp_path / "merged"
    with adapter_methods.registered(OutputScale()):
        assert main(["list", "methods", "--json"]) == 0
        assert "outscale" in json.loads(capsys.readouterr().out)
        assert main(["train", "--model", str(tmp_path / "base"), "--data", str(ann), "--method", "outscale",
                     "--steps", "2", "--batch-size", "4", "--attack-steps", "1", "--data.train_split", "test",
                     "--data.val_split", "test", "--out", str(run)]) == 0
        assert "outscale: 2 steps, 512 trainable parameters" in capsys.readouterr().out
        scales = load_file(str(run / "adapter" / "scales.safetensors"))
        assert len(scales) == 16 and any((t != 1).any() for t in scales.values())     # it trained
        assert main(["eval", "--model", str(tmp_path / "base"), "--adapter", str(run / "adapter"), "--data", str(ann),
                     "--split", "test", "--attacks", "pgd", "--steps", "2", "--no-sanity", "--out", str(ev),
                     "--json"]) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert metrics["adapter"] == str(run / "adapter")
        assert metrics["robust"]["pgd@4/255"]["metrics"]["r_mean"] <= metrics["clean"]["r_mean"]
        assert main(["adapter", "merge", "--model", str(tmp_path / "base"), "--adapter", str(run / "adapter"),
                     "--out", str(merged)]) == 0
        # merged weights give the adapted model's features
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        adapted = load_model(str(tmp_path / "base"))
        from advlora.adapters import load_adapter

        load_adapter(adapted, run / "adapter")
        folded = load_model(str(merged))
        with torch.no_grad():
            assert (adapted.encode_image(x) - folded.encode_image(x)).abs().max() <= 1e-5
    assert "outscale" not in adapter_methods.choices()


def test_the_how_to_shows_this_throw_away_method_as_declared_here():
    """docs/howto-method.md's worked example is the code above, word for word (the page cannot drift from it)."""
    import inspect
    import re

    page = (SRC.parents[1] / "docs" / "howto-method.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    for cls in (ScaledLinear, OutputScale):
        assert inspect.getsource(cls) in blocks, cls.__name__
    ia3 = (METHODS_PACKAGE / "ia3.py").read_text(encoding="utf-8")
    assert any(b.strip() and b in ia3 for b in blocks)                                # section 3: the IA3 file


# ---- the peft variants: each its own file of the methods package ------------------------------------------------
#: method options; each saves in peft's format
VARIANTS = [pytest.param({"method": "dora"}, id="dora"),
            pytest.param({"method": "lora", "use_rslora": True}, id="rslora"),
            pytest.param({"method": "vera"}, id="vera"), pytest.param({"method": "ia3"}, id="ia3"),
            pytest.param({"method": "dora", "init": "cluster", "trainable_alpha": True}, id="dora-cluster-alpha")]
#: the variants whose peft folder alone (no advlora.json) loads in advlora: VeRA's does not name its layers' sizes
FOREIGN = ("dora", "lora")
TEXTS = ["red apple", "dog face", "rocket", "green heart"]
_BASE: dict = {}


def fresh(arch="clip"):
    if arch not in _BASE:
        tok = _BASE["clip"].tokenizer if _BASE else None
        from advlora.models.tiny import random_model

        _BASE[arch] = random_model(arch, "test", seed=0, tokenizer=tok)
    return copy.deepcopy(_BASE[arch])


@torch.no_grad()
def features(m):
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return torch.cat([m.encode_image(x), m.encode_text(TEXTS)])



def test_peft_format_is_declared_by_what_the_folder_holds(tmp_path):
    """``peft_format`` (what the model card says) is True exactly for the methods whose folder holds peft's files."""
    from advlora.adapters import attach_adapter, save_adapter

    for name in adapter_methods.names():
        method = adapter_methods.get(name)
        if not method.trains:
            continue
        m = fresh()
        attach_adapter(m, name, rank=2)
        folder = save_adapter(m, tmp_path / name)
        peft = (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        assert method.peft_format == peft, name


@pytest.mark.parametrize("arch", ["clip", "blip", "siglip"])
@pytest.mark.parametrize("opts", VARIANTS)
def test_variant_starts_unchanged_and_its_folder_loads_in_peft(opts, arch, tmp_path):
    from peft import PeftModel

    from advlora.adapters import adapter_info, attach_adapter, load_adapter, save_adapter

    m = fresh(arch)
    before = features(m)
    attach_adapter(m, opts, rank=2)
    assert (features(m) - before).abs().max() <= 1e-5
    assert adapter_info(m)["trainable"] > 0
    nudge(m)
    want = features(m)
    assert (want - before).abs().max() > 1e-3                                    # the adapter does something
    save_adapter(m, tmp_path / "ad")
    base = fresh(arch)
    base.hf_model = PeftModel.from_pretrained(base.hf_model, str(tmp_path / "ad")).get_base_model()
    assert (features(base) - want).abs().max() <= 1e-5
    back = load_adapter(fresh(arch), tmp_path / "ad")
    assert (features(back) - want).abs().max() <= 1e-5
    assert adapter_info(back)["method"] == opts["method"]
    if opts["method"] not in FOREIGN:
        return
    (tmp_path / "ad" / "advlora.json").unlink()                                   # a folder peft alone wrote
    foreign = load_adapter(fresh(arch), tmp_path / "ad")
    assert adapter_info(foreign)["method"] == opts["method"]
    assert (features(foreign) - want).abs().max() <= 1e-5


@pytest.mark.parametrize("opts", VARIANTS)
def test_variant_merge_leaves_the_features(opts):
    from advlora.adapters import adapter_info, attach_adapter, merge_adapter

    m = attach_adapter(fresh(), opts, rank=2)
    nudge(m)
    want = features(m)
    merge_adapter(m)
    assert not any(type(x).__module__.startswith("peft.") for x in m.hf_model.modules())
    assert (features(m) - want).abs().max() <= 1e-5
    assert adapter_info(m)["trainable"] == 0 and "merged" in adapter_info(m)["method"]


@pytest.mark.parametrize("opts", VARIANTS)
def test_variant_resumes_bit_for_bit(opts, tmp_path):
    from safetensors.torch import load_file
    from train_utils import tiny_config, write_data

    from advlora.training import load_run_config, train

    ann = write_data(tmp_path / "data", n=8)
    conf = tiny_config(ann, adapter={**opts, "rank": 2, "towers": "vision"},
                       train={"steps": 4, "batch_size": 4, "checkpoint_every": 2},
                       eval={"val_limit": 4, "test_limit": 4, "test_steps": 1, "val_steps": 1})
    ref = train(load_run_config(None, base=conf), tmp_path / "ref")

    def cut(step):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(load_run_config(None, base=conf), tmp_path / "cut", on_step=cut)
    train(load_run_config(None, base=conf), tmp_path / "cut", resume=True)
    name = "adapter/adapter_model.safetensors"
    a, b = load_file(str(ref.run_dir / name)), load_file(str(tmp_path / "cut" / name))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    first = load_file(str(tmp_path / "cut" / "checkpoints" / "step-000002" / "trainable.safetensors"))
    assert any(not t.equal(load_file(str(ref.run_dir / "checkpoints" / "step-000004" / "trainable.safetensors"))[k])
               for k, t in first.items())                                           # it trained after the cut


@pytest.mark.parametrize("opts", VARIANTS)
def test_variant_refuses_an_unsupported_layer_in_one_line(opts):
    from advlora.adapters import attach_adapter
    from advlora.errors import AdvloraError

    m = fresh()
    m.hf_model.vision_model.pool = torch.nn.MultiheadAttention(32, 2)             # a fused attention in a tower
    with pytest.raises(AdvloraError) as e:
        attach_adapter(m, opts, rank=2, targets=["vision:pool.out_proj"])
    assert len(str(e.value).splitlines()) == 1 and "does not support layer vision_model.pool.out_proj" in str(e.value)
    assert not any(type(x).__module__.startswith("peft.") for x in m.hf_model.modules())   # before any work


@pytest.mark.parametrize("method,init", [("pissa", "pissa"), ("lora", "peft")])
def test_pissa_is_lora_with_init_pissa_and_old_folders_still_load(tmp_path, method, init):
    """``--method pissa`` is lora with init=pissa; a folder (or run config) written when lora ignored ``init``
    (it carried AdvLoRA's default, cluster) loads as it did."""
    from advlora.adapters import AdapterConfig, adapter_info, attach_adapter, load_adapter, save_adapter
    from advlora.errors import AdvloraError

    cfg = AdapterConfig(method=method)
    assert (cfg.method, cfg.init) == ("lora", init)
    assert AdapterConfig(method=method, init="cluster").init == init                   # an old config
    with pytest.raises(AdvloraError, match="unknown adapter init 'kmeans'"):
        AdapterConfig(method="lora", init="kmeans")
    m = attach_adapter(fresh(), method, rank=2)
    assert adapter_info(m)["method"] == "lora" and adapter_info(m)["init"] == init
    nudge(m)
    save_adapter(m, tmp_path / "ad")
    meta = json.loads((tmp_path / "ad" / "advlora.json").read_text())
    meta["method"] = meta["config"]["method"] = method
    meta["config"]["init"] = "cluster"
    (tmp_path / "ad" / "advlora.json").write_text(json.dumps(meta))
    back = load_adapter(fresh(), tmp_path / "ad")
    assert back.advlora_adapter.config.init == init
    assert (features(back) - features(m)).abs().max() <= 1e-5


def test_list_methods_shows_each_summary_and_trainable_parameters(capsys):
    from advlora.cli import main

    assert main(["list", "methods", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    for name in adapter_methods.names():
        assert listed[name].startswith(adapter_methods.get(name).summary)
        assert "trainable on the tiny CLIP" in listed[name]
    assert "(0 trainable" in listed["frozen"] and listed["pissa"] == "lora with init=pissa"
    counts = {n: int(listed[n].rsplit("(", 1)[1].split()[0].replace(",", "")) for n in adapter_methods.names()}
    assert counts["ia3"] < counts["vera"] < counts["lora"] < counts["dora"] < counts["full"]


def test_rslora_scales_by_alpha_over_root_rank():
    from advlora.adapters import AdapterConfig, attach_adapter, lora_layers

    assert AdapterConfig(method="lora", rank=4, lora_alpha=8, use_rslora=True).scaling == 4.0
    assert AdapterConfig(method="lora", rank=4, lora_alpha=8).scaling == 2.0
    m = attach_adapter(fresh(), "lora", rank=4, lora_alpha=8, use_rslora=True)
    assert {lay.scaling["default"] for lay in lora_layers(m).values()} == {4.0}


@pytest.mark.parametrize("opts", VARIANTS)
def test_variant_trains_under_every_objective_and_the_attack_sees_it(opts):
    """One adversarial step of each training objective: the attack's gradient flows through the adapter (the
    perturbation moves when the adapter does) and the update reaches every trainable tensor."""
    from advlora.adapters import attach_adapter, regularization_loss
    from advlora.attacks import ThreatModel
    from advlora.training import objectives
    from advlora.training.config import AttackConfig
    from advlora.training.reference import OriginalModel
    from advlora.training.step import Dist, TrainTask, attack_batch

    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    positives = torch.eye(4, dtype=torch.bool)
    m = attach_adapter(fresh(), opts, rank=2, towers="vision")
    ref = OriginalModel(m, lambda: fresh())
    nudge(m)                                      # as after a first step: at the start B = 0 leaves A no gradient
    cfg = AttackConfig(name="pgd", threat=ThreatModel(eps="4/255", steps=2, random_start=False))
    tokens = m.tokenize(TEXTS)
    with torch.no_grad():
        text = m.encode_text(tokens)
    for name in objectives.names():
        obj = objectives.get(name)
        acfg = cfg if not obj.attack else AttackConfig(name=obj.attack.get("name", cfg.name), threat=cfg.threat)
        phi0 = ref.encode_image(x) if obj.reference else None
        adv = attack_batch(m, acfg, x, text, positives, torch.Generator().manual_seed(0), objective=name,
                           reference=phi0)
        nudged = copy.deepcopy(m)
        with torch.no_grad():
            for p in nudged.parameters():
                if p.requires_grad:
                    p.mul_(1.5)
        moved = attack_batch(nudged, acfg, x, text, positives, torch.Generator().manual_seed(0), objective=name,
                             reference=phi0)
        assert not torch.equal(adv, moved), name                    # the attack differentiates through the adapter
        m.zero_grad(set_to_none=True)
        task = TrainTask(m, acfg, Dist(), regularization_loss, objective=name)
        loss, _, _ = task(x, adv, tokens, None, positives, reference=phi0)
        loss.backward()
        trainable = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
        assert torch.isfinite(loss) and trainable, name
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable), (name, opts)


def test_grid_methods_compares_every_declared_method_under_the_demo_budget():
    from advlora.cli.grid import resolve_config
    from advlora.experiments.spec import load_grid_config, run_config_dict, train_cells
    from advlora.training import load_run_config

    cfg, demo = load_grid_config(resolve_config("grid-methods")), load_grid_config(resolve_config("grid-tiny-clip"))
    assert cfg.train == demo.train and vars(cfg.eval) == vars(demo.eval)
    assert set(adapter_methods.names()) <= {m.method for m in cfg.methods}
    adapters = {tc.method.label: load_run_config(None, base=run_config_dict(cfg, tc)).adapter
                for tc in train_cells(cfg)}
    assert (adapters["adv. LoRA (PiSSA init)"].method, adapters["adv. LoRA (PiSSA init)"].init) == ("lora", "pissa")
    assert adapters["adv. LoRA"].init == "peft" and adapters["adv. DoRA"].method == "dora"


def test_a_family_a_method_does_not_support_is_one_line_before_any_work():
    from advlora.adapters import attach_adapter
    from advlora.errors import AdvloraError

    class BlipOnly(OutputScale):
        name = "blip-only"
        summary = "the throw-away scale, declared for BLIP alone"
        families = ("blip",)

    with adapter_methods.registered(BlipOnly()):
        m = fresh()
        with pytest.raises(AdvloraError) as e:
            attach_adapter(m, "blip-only")
        assert str(e.value) == "adapter method blip-only does not support the clip family (supported: blip)"
        assert not any(isinstance(x, ScaledLinear) for x in m.modules())
        assert sum(isinstance(x, ScaledLinear) for x in attach_adapter(fresh("blip"), "blip-only").modules()) > 0
