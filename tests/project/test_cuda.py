"""Checks that need a GPU (``pytest -m cuda``); skipped where torch sees none. scripts/gpu-check.sh runs them."""
from __future__ import annotations

import pytest
import torch

from advlora.adapters import attach_adapter
from advlora.attacks import ThreatModel, pgd
from advlora.attacks.objectives import contrastive
from advlora.models.tiny import random_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _batch(model, n: int = 8):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, model.image_size, model.image_size, generator=g)
    captions = [f"caption number {i}" for i in range(n)]
    return images, captions


def test_pgd_on_cuda_matches_cpu_in_float32():
    cpu = random_model("clip", "test", seed=0)
    images, captions = _batch(cpu)
    results = {}
    for dev in ("cpu", "cuda"):
        model = cpu.to(dev)
        with torch.no_grad():
            text = model.encode_text(captions)
        obj = contrastive(model, text, torch.eye(len(captions), dtype=torch.bool, device=dev))
        adv = pgd(obj, images.to(dev), ThreatModel(eps=4 / 255, steps=5, random_start=False))
        assert adv.dtype == torch.float32
        results[dev] = adv.cpu()
    # sign steps can flip on float noise; almost every pixel must agree
    agree = (results["cpu"] - results["cuda"]).abs().le(1e-4).float().mean()
    assert agree > 0.95


def test_advlora_training_step_under_bf16_autocast_is_finite():
    from advlora.bench.cases import train_step_fn

    model = attach_adapter(random_model("clip", "test", seed=0), "advlora", rank=4).to("cuda")
    images, captions = _batch(model)
    step = train_step_fn(model, images.to("cuda"), captions)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        step()
    after = dict(model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert all(torch.isfinite(after[n]).all() for n in before)


def test_threat_model_generator_on_cuda_is_reproducible():
    th = ThreatModel(eps="4/255", seed=3)
    a = torch.rand(4, generator=th.generator("cuda"), device="cuda")
    b = torch.rand(4, generator=th.generator("cuda"), device="cuda")
    assert torch.equal(a, b)
