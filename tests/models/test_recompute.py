"""advlora.models.recompute: activation checkpointing that also covers the eval-mode attack, with unchanged results."""
from __future__ import annotations

import copy
import csv

import pytest
import torch
from train_utils import tiny_config, write_data

from advlora.adapters import attach_adapter
from advlora.models.recompute import enable_recompute, recompute_enabled
from advlora.models.tiny import random_model
from advlora.training import load_run_config, train


def _pair(arch: str):
    plain = attach_adapter(random_model(arch, "test", seed=0), "advlora", rank=2)
    recomputed = copy.deepcopy(plain)
    assert enable_recompute(recomputed) > 0
    return plain, recomputed


def _grads(model, images, captions, mode: str):
    getattr(model, mode)()
    model.zero_grad(set_to_none=True)
    x = images.clone().requires_grad_(True)
    (model.encode_image(x) @ model.encode_text(captions).t()).logsumexp(1).sum().backward()
    return x.grad, [p.grad for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("arch", ["clip", "blip"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_same_gradients_for_images_and_adapters(arch, mode):
    plain, recomputed = _pair(arch)
    images = torch.rand(3, 3, plain.image_size, plain.image_size, generator=torch.Generator().manual_seed(1))
    captions = ["red apple", "dog face", "rocket"]
    gx, gp = _grads(plain, images, captions, mode)
    rx, rp = _grads(recomputed, images, captions, mode)
    assert gx.abs().sum() > 0
    torch.testing.assert_close(rx, gx, rtol=1e-5, atol=1e-7)
    # BLIP's cross-attention adapters take no part in ITC features: no gradient either way
    assert [r is None for r in rp] == [g is None for g in gp] and any(g is not None for g in gp)
    for r, g in zip(rp, gp):
        if g is not None:
            torch.testing.assert_close(r, g, rtol=1e-5, atol=1e-7)


def test_layers_are_recomputed_in_the_eval_mode_attack():
    """The attack runs in eval mode, where transformers' own switch does not checkpoint: here each layer's forward
    runs again in the backward pass."""
    calls = {"n": 0}

    def count(*_):
        calls["n"] += 1

    def forward_backward(model) -> int:
        calls["n"] = 0
        model.eval()
        x = torch.rand(2, 3, model.image_size, model.image_size, requires_grad=True)
        model.encode_image(x).sum().backward()
        return calls["n"]

    plain, recomputed = _pair("clip")
    for model in (plain, recomputed):
        for name, module in model.hf_model.vision_model.named_modules():
            if name.endswith("layer_norm1"):   # a layer's first module (a recomputation may stop before its end)
                module.register_forward_pre_hook(count)
    layers = forward_backward(plain)
    assert layers > 0
    assert forward_backward(recomputed) == 2 * layers
    with torch.no_grad():                        # no backward to come: nothing is checkpointed
        calls["n"] = 0
        recomputed.encode_image(torch.rand(2, 3, recomputed.image_size, recomputed.image_size))
        assert calls["n"] == layers


def test_a_copy_recomputes_its_own_layers():
    _, recomputed = _pair("clip")
    twin = copy.deepcopy(recomputed)
    assert recompute_enabled(twin)
    bound = [m.__dict__["forward"].__self__ is m for m in twin.modules() if "forward" in m.__dict__]
    assert bound and all(bound)


def test_training_with_gradient_checkpointing_matches_training_without(tmp_path):
    ann = write_data(tmp_path / "data", n=8)
    losses = []
    for flag in (False, True):
        cfg = load_run_config(overrides=tiny_config(ann, model={"random": "clip:test", "gradient_checkpointing": flag},
                                                    adapter={"method": "advlora"}, train={"steps": 2},
                                                    eval={"robust": False}))
        train(cfg, tmp_path / f"run-{flag}")
        with open(tmp_path / f"run-{flag}" / "history.csv", newline="") as f:
            losses.append([float(r["loss"]) for r in csv.DictReader(f)])
    assert len(losses[0]) == 2
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
