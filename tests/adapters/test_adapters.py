"""Adapters on tiny random CLIP and BLIP: output preserved, k-means, alignment, gradients, files, merge, errors."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from train_utils import nudge

from advlora.adapters import (
    AdapterConfig,
    adapter_info,
    alignment_errors,
    alpha_parameters,
    alpha_values,
    attach_adapter,
    kmeans,
    load_adapter,
    lora_layers,
    merge_adapter,
    regularization_loss,
    save_adapter,
)
from advlora.adapters.init import cluster_factors, relative_error
from advlora.errors import AdvloraError
from advlora.models.tiny import random_model

TEXTS = ["red apple", "dog face", "rocket", "green heart"]
METHOD_VARIANTS = [
    {"method": "frozen"}, {"method": "full"}, {"method": "lora"}, {"method": "pissa"},
    {"method": "advlora"}, {"method": "advlora", "mode": "zero_alpha"}, {"method": "advlora", "init": "pissa"},
    {"method": "advlora", "init": "peft"}, {"method": "advlora", "kmeans_on": "cols", "alpha_mode": "tower"},
    {"method": "advlora", "align_init": "onehot", "alpha_mode": "fixed"},
    {"method": "advlora", "alpha_mode": "shared"},
]


_BASE: dict = {}


def fresh(arch="clip", size="test"):
    """A new copy of one random model per (arch, size): copies share the tokenizer (two builds of the tiny
    tokenizer may number tokens apart) and copying is faster than initialising."""
    if (arch, size) not in _BASE:
        tok = _BASE[("clip", "test")].tokenizer if _BASE else None
        _BASE[(arch, size)] = random_model(arch, size, seed=0, tokenizer=tok)
    return copy.deepcopy(_BASE[(arch, size)])


def images(n=3, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def features(m):
    return m.encode_image(images()), m.encode_text(TEXTS)


@torch.no_grad()
def scores(m):
    a, b = features(m)
    return a @ b.t()



@pytest.mark.parametrize("arch,opts",
                         [("clip", o) for o in METHOD_VARIANTS] + [("blip", o) for o in METHOD_VARIANTS[2:6]],
                         ids=lambda o: o if isinstance(o, str) else "-".join(map(str, o.values())))
def test_output_unchanged_after_attach(arch, opts):
    m = fresh(arch)
    img0, txt0 = features(m)
    attach_adapter(m, opts, rank=4)
    img1, txt1 = features(m)
    assert (img0 - img1).abs().max() <= 1e-5
    assert (txt0 - txt1).abs().max() <= 1e-5
    info = adapter_info(m)
    assert info["trainable"] == sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert 0 <= info["share"] <= 100


def test_kmeans_objective_never_increases_and_batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 60, 5, generator=g)
    x[1] = x[1] * 0.1 + torch.randint(0, 4, (60, 1), generator=g) * 3.0  # clustered data
    res = kmeans(x, 4, iters=30, seed=1)
    obj = res.objective
    assert obj.shape[1] == 3 and obj.shape[0] >= 2
    assert (obj[1:] <= obj[:-1] * (1 + 1e-12) + 1e-12).all()
    assert obj[-1, 0] < obj[0, 0]  # Lloyd improved on the seeding
    # each batch element equals a separate run on it alone (no mixing across the batch)
    final = ((x - torch.gather(res.centroids, 1, res.assign.unsqueeze(-1).expand(-1, -1, 5)).float()) ** 2).sum((1, 2))
    assert torch.allclose(final.double(), obj[-1], rtol=1e-5)
    # seeded: the same seed gives the same result, another seed may not
    again = kmeans(x, 4, iters=30, seed=1)
    assert torch.equal(again.assign, res.assign)


def test_kmeans_iteration_count_and_single_matrix():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(2))
    zero = kmeans(x, 5, iters=0)
    assert zero.objective.shape == (1,) and zero.centroids.shape == (5, 4) and zero.assign.shape == (50,)
    assert len(kmeans(x, 5, iters=3).objective) <= 4
    with pytest.raises(ValueError):
        kmeans(x, 51)


@pytest.mark.parametrize("on", ["rows", "cols"])
def test_alignment_error_at_most_onehot_kmeans_error(on):
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(24, 16, generator=g) for _ in range(3)] + [torch.randn(16, 40, generator=g)]
    fs = cluster_factors(ws, 4, iters=10, seed=0, on=on)
    for w, f in zip(ws, fs):
        assert f.A.shape == (4, 16 if w.shape[1] == 16 else 40) and f.B.shape == (w.shape[0], 4)
        assert f.error <= f.onehot_error + 1e-6
        assert abs(float(relative_error(w, f.B, f.A)) - f.error) < 1e-5
        assert f.kmeans_objective == sorted(f.kmeans_objective, reverse=True)
    onehot = cluster_factors(ws, 4, iters=10, seed=0, on=on, align="onehot")
    for f, o in zip(fs, onehot):
        assert abs(o.error - o.onehot_error) < 1e-6 and f.error <= o.error + 1e-6


def test_attach_reports_alignment_errors():
    m = fresh()
    attach_adapter(m, "advlora", rank=4)
    rep = m.advlora_adapter.report
    assert len(rep) == 16 and all(r["error"] <= r["onehot_error"] + 1e-6 for r in rep)
    now = alignment_errors(m)
    for r in rep:  # the regulariser's closed form agrees with the error computed at init
        assert abs(now[r["layer"]] - r["error"]) < 1e-3


@pytest.mark.parametrize("mode", ["residual", "zero_alpha"])
def test_gradient_reaches_alpha_a_b_only(mode):
    m = fresh()
    attach_adapter(m, "advlora", rank=4, mode=mode, align_lambda=0.1)
    if mode == "zero_alpha":
        for p in alpha_parameters(m):  # one step of training later alpha is non-zero; A and B then get gradient
            p.data.fill_(0.5)
    a, b = m.encode_image(images()), m.encode_text(TEXTS)
    loss = -(a @ b.t()).diag().sum() + regularization_loss(m)
    loss.backward()
    trainable = {n: p for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_A" in n or "lora_B" in n or n.endswith("advlora_alpha")) for n in trainable)
    assert len(alpha_parameters(m)) == 16
    for n, p in trainable.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert all(p.grad is None for p in m.parameters() if not p.requires_grad)


def test_alpha_modes_and_values():
    m = fresh()
    attach_adapter(m, "advlora", rank=2, alpha_mode="tower", alpha_init=0.5)
    assert len(alpha_parameters(m)) == 2
    vals = alpha_values(m)
    assert len(vals) == 16 and set(vals.values()) == {0.5}
    m2 = fresh()
    attach_adapter(m2, "advlora", rank=2, alpha_mode="fixed")
    assert alpha_parameters(m2) == [] and set(alpha_values(m2).values()) == {1.0}
    m3 = fresh()
    attach_adapter(m3, "lora", rank=2)
    assert alpha_parameters(m3) == [] and alpha_values(m3) == {}
    assert float(regularization_loss(m3)) == 0.0


def test_regularization_loss_matches_direct_formula():
    m = fresh()
    attach_adapter(m, "advlora", rank=4, align_lambda=0.3)
    nudge(m)

    direct = 0.0
    for lay in lora_layers(m).values():
        W0 = lay.initial_weight()
        BA = lay.lora_B["default"].weight @ lay.lora_A["default"].weight
        direct += float(((W0 - BA) ** 2).sum().detach() / (W0 ** 2).sum())
    assert abs(float(regularization_loss(m)) - 0.3 * direct) < 1e-4 * max(1.0, direct)


@pytest.mark.parametrize("arch,opts", [
    ("clip", {"method": "advlora"}), ("clip", {"method": "advlora", "mode": "zero_alpha"}),
    ("clip", {"method": "pissa"}), ("blip", {"method": "advlora", "alpha_mode": "tower"}),
])
def test_export_loads_in_peft_with_same_scores(tmp_path, arch, opts):
    from peft import PeftModel

    m = fresh(arch)
    attach_adapter(m, opts, rank=4)
    nudge(m)
    if opts.get("mode") == "zero_alpha":
        assert any(v != 0 for v in alpha_values(m).values())
    save_adapter(m, tmp_path / "ad")
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and (tmp_path / "ad" / "adapter_model.safetensors").exists()
    base = fresh(arch)
    ref = scores(base)
    pm = PeftModel.from_pretrained(base.hf_model, str(tmp_path / "ad"))
    base.hf_model = pm.get_base_model()
    got = scores(base)
    assert (got - scores(m)).abs().max() <= 1e-4
    assert (got - ref).abs().max() > 1e-4  # the adapter does something


@pytest.mark.parametrize("opts", [{"method": "advlora"}, {"method": "pissa"}, {"method": "lora"}, {"method": "full"},
                                  {"method": "frozen"},
                                  {"method": "advlora", "mode": "zero_alpha", "kmeans_on": "cols",
                                   "alpha_mode": "shared"}])
def test_save_load_round_trip(tmp_path, opts):
    m = fresh()
    attach_adapter(m, opts, rank=4, towers="vision" if opts["method"] == "full" else "both")
    nudge(m)
    save_adapter(m, tmp_path / "ad")
    m2 = load_adapter(fresh(), tmp_path / "ad")
    assert (scores(m2) - scores(m)).abs().max() <= 1e-5
    # the same trainable tensors under the same names (what a training resume needs)
    t1 = {n: p for n, p in m.named_parameters() if p.requires_grad}
    t2 = {n: p for n, p in m2.named_parameters() if p.requires_grad}
    assert t1.keys() == t2.keys()
    assert all(torch.allclose(t1[n], t2[n], atol=1e-6) for n in t1)
    assert adapter_info(m2)["trainable"] == adapter_info(m)["trainable"]
    assert alpha_values(m2) == pytest.approx(alpha_values(m))


def test_foreign_peft_lora_folder_loads(tmp_path):
    m = fresh()
    attach_adapter(m, "lora", rank=2)
    nudge(m)
    save_adapter(m, tmp_path / "ad")
    (tmp_path / "ad" / "advlora.json").unlink()
    m2 = load_adapter(fresh(), tmp_path / "ad")
    assert adapter_info(m2)["method"] == "lora"
    assert (scores(m2) - scores(m)).abs().max() <= 1e-5


@pytest.mark.parametrize("arch,opts", [("clip", {"method": "advlora"}), ("clip", {"method": "pissa"}),
                                       ("blip", {"method": "advlora", "mode": "zero_alpha"})])
def test_merge_equals_unmerged(arch, opts):
    m = fresh(arch)
    attach_adapter(m, opts, rank=4)
    nudge(m)
    before = scores(m)
    merge_adapter(m)
    assert not any(isinstance(x, torch.nn.Module) and hasattr(x, "lora_A") for x in m.modules())
    assert (scores(m) - before).abs().max() <= 1e-5
    assert adapter_info(m)["trainable"] == 0 and "merged" in adapter_info(m)["method"]


def test_bad_input_errors(tmp_path):
    with pytest.raises(AdvloraError,
                       match="unknown adapter method 'adalora' \\(valid: advlora, .*frozen, full, .*lora, .*pissa"):
        attach_adapter(fresh(), "adalora")
    with pytest.raises(AdvloraError, match="no_such_proj.*valid:.*q_proj"):
        attach_adapter(fresh(), "advlora", targets=["no_such_proj"])
    with pytest.raises(AdvloraError, match="rank 40 is larger than layer"):
        attach_adapter(fresh(), "lora", rank=40)
    with pytest.raises(AdvloraError, match="adapter towers"):
        attach_adapter(fresh(), "lora", towers="audio")
    with pytest.raises(AdvloraError, match="unknown adapter option"):
        attach_adapter(fresh(), "lora", rnak=4)
    with pytest.raises(AdvloraError, match="zero_alpha"):
        AdapterConfig(method="advlora", mode="zero_alpha", init="peft")
    m = attach_adapter(fresh(), "lora", rank=2)
    with pytest.raises(AdvloraError, match="already has a lora adapter"):
        attach_adapter(m, "advlora")
    save_adapter(m, tmp_path / "clip_ad")
    with pytest.raises(AdvloraError, match="made for another model"):
        load_adapter(fresh("blip"), tmp_path / "clip_ad")
    bigger = fresh("clip", "tiny")
    with pytest.raises(AdvloraError, match="made for another model.*32 x 32"):
        load_adapter(bigger, tmp_path / "clip_ad")
    with pytest.raises(AdvloraError, match="not an adapter folder"):
        load_adapter(fresh(), tmp_path)
    with pytest.raises(AdvloraError, match="not found"):
        load_adapter(fresh(), tmp_path / "missing")


def test_targets_towers_and_regex():
    m = attach_adapter(fresh(), "lora", rank=2, towers="vision", targets=["q_proj", r".*layers\.1\.self_attn\.v_proj"])
    names = list(m.advlora_adapter.layers)
    assert names and all(n.startswith("vision_model") for n in names)
    assert sum(n.endswith("q_proj") for n in names) == 2 and sum(n.endswith("v_proj") for n in names) == 1
    m2 = attach_adapter(fresh(), "lora", rank=2, targets=["vision:out_proj", "text:fc1"])
    names2 = list(m2.advlora_adapter.layers)
    assert len(names2) == 4 and {n.split(".")[0] for n in names2} == {"vision_model", "text_model"}
    full = attach_adapter(fresh(), "full", towers="text")
    assert all(n.startswith(("text_model", "text_projection")) for n, p in full.hf_model.named_parameters()
               if p.requires_grad)


def test_a_new_initialisation_is_one_declaration(tmp_path):
    """A throw-away initialisation declared here (truncated identity factors) is accepted by AdapterConfig,
    attached, starts with the model's outputs unchanged, and its adapter saves and loads back."""
    from advlora.adapters import init as I
    from advlora.adapters import load_adapter, lora_layers, save_adapter

    def eye(weights, cfg):
        out = []
        for w in weights:
            A = torch.eye(cfg.rank, w.shape[1])
            out.append(I.Factors(A, (w.detach().float() @ A.t()).contiguous(), 0.0))
        return out

    with I.registered(I.Initialisation("eye", eye, "truncated identity A, B = W0 A^T")):
        with pytest.raises(AdvloraError, match="unknown adapter init 'eyes'"):
            AdapterConfig(method="advlora", init="eyes")
        m = fresh()
        before = scores(m)
        attach_adapter(m, "advlora", rank=2, init="eye", towers="vision")
        assert (scores(m) - before).abs().max() <= 1e-5
        lay = next(iter(lora_layers(m).values()))
        assert torch.equal(lay.lora_A["default"].weight, torch.eye(2, lay.lora_A["default"].weight.shape[1]))
        nudge(m)
        save_adapter(m, tmp_path / "ad")
        back = load_adapter(fresh(), tmp_path / "ad")
        assert (scores(back) - scores(m)).abs().max() <= 1e-5
        assert AdapterConfig(method="dora", init="eye").init == "eye"     # DoRA offers AdvLoRA's, read live
    assert "eye" not in I.INITIALISATIONS
    with pytest.raises(AdvloraError, match="unknown adapter init 'eye'"):
        AdapterConfig(method="advlora", init="eye")
