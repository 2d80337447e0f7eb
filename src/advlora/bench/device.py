"""``advlora bench --device cuda``: the GPU path, each figure measured in the same run as what it is divided by.

- PGD-10 images/s: a batch attacked with PGD-10 in float32 (evaluation and its attacks run in float32), images
  per second of wall time, with the device synchronised around each timing;
- training-step MFU: the FLOPs of one AdvLoRA adversarial training step (PGD-3 on the batch, then the update,
  counted by ``torch.utils.flop_counter``) per second, under bf16 autocast as the trainer runs it on CUDA
  (``train.mixed_precision=auto``), divided by the bf16 dense matmul peak measured a moment before on the
  same device (an 8192^3 product, or 512^3 on CPU);
- data wait: the share of a training step's wall time spent waiting for the next batch of a DataLoader with
  ``workers`` workers over a folder of synthetic COCO-shaped JPEGs (``synthetic_photos``).
The same code runs on CPU (``--device cpu``) so that the path is tested where there is no GPU; CPU figures are
not the GPU's and are labelled with the device they came from.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from advlora.adapters import attach_adapter
from advlora.attacks import ThreatModel, pgd
from advlora.attacks.objectives import contrastive
from advlora.bench import cases


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def bf16_matmul_peak(device: torch.device, repeats: int = 5, warmup: int = 2) -> float:
    """FLOP/s of a dense bf16 product on ``device`` now (8192^3 on CUDA, 512^3 on CPU)."""
    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    return 2 * n ** 3 / _time(lambda: a @ b, device, repeats, warmup)


def pgd_images_per_s(model, images: torch.Tensor, captions: list[str], repeats: int, warmup: int,
                     steps: int = 10) -> float:
    """Images per second of PGD-``steps`` (linf 4/255) in float32 on the model's device."""
    device = images.device
    with torch.no_grad():
        text = model.encode_text(captions)
    objective = contrastive(model, text, torch.eye(len(captions), dtype=torch.bool, device=device))
    threat = ThreatModel(eps=4 / 255, steps=steps)
    return len(images) / _time(lambda: pgd(objective, images, threat), device, repeats, warmup)


def train_step_mfu(base, images: torch.Tensor, captions: list[str], rank: int, repeats: int, warmup: int,
                   peak: float) -> dict[str, float]:
    """AdvLoRA training step (PGD-3 + update) under bf16 autocast on CUDA: seconds, FLOPs and MFU vs ``peak``."""
    device = images.device
    model = attach_adapter(copy.deepcopy(base), "advlora", rank=rank)
    step = cases.train_step_fn(model, images, captions)
    if device.type == "cuda":
        plain = step

        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                plain()
    seconds = _time(step, device, repeats, warmup)
    flops = cases.count_flops(step)
    return {"step_s": seconds, "step_gflop": flops / 1e9, "mfu": flops / seconds / peak}


def synthetic_photos(root: str | Path, n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> Path:
    """``n`` random-texture JPEGs of COCO's typical size and a generic JSON-lines annotation, in ``root``."""
    import json

    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    lines = []
    for i in range(n):
        small = (torch.rand(size[1] // 16, size[0] // 16, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(small).resize(size).save(root / f"{i:06d}.jpg", quality=90)
        lines.append(json.dumps({"image": f"{i:06d}.jpg", "captions": [f"a photo number {i}"], "split": "train"}))
    (root / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    return root / "annotations.jsonl"


def data_wait_share(loader, step: Callable[[Any], None], steps: int) -> float:
    """Share of wall time spent in ``next(loader)`` over ``steps`` steps of ``step(batch)`` (after one warm-up)."""
    it = iter(loader)
    step(next(it))
    wait = total = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        step(batch)
        t2 = time.perf_counter()
        wait += t1 - t0
        total += t2 - t0
    return wait / total if total else 0.0


def run_device_bench(device: str, sizes: tuple[str, ...] = ("vit-b32", "blip-base"), batch: int = 64,
                     rank: int = 8, repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """The GPU figures for each size; returns ``{"device", "peak_bf16_tflops", "sizes": {size: {...}}}``."""
    dev = torch.device(device)
    peak = bf16_matmul_peak(dev)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev),
                           "peak_bf16_tflops": peak / 1e12, "batch": batch, "sizes": {}}
    for size in sizes:
        base = cases.base_model(size).to(dev)
        images, captions = cases.make_batch(base, batch)
        images = images.to(dev)
        row = {"pgd10_images_per_s": pgd_images_per_s(base, images, captions, repeats, warmup)}
        row.update(train_step_mfu(base, images, captions, rank, repeats, warmup, peak))
        out["sizes"][size] = row
        del base
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return out


def format_device_bench(result: dict[str, Any]) -> str:
    """The table ``advlora bench --device`` prints."""
    lines = [f"device {result['device']}: bf16 matmul peak {result['peak_bf16_tflops']:.3g} TFLOP/s (measured now), "
             f"batch {result['batch']}",
             f"{'size':<10} {'PGD-10 img/s':>13} {'step s':>8} {'step GFLOP':>11} {'MFU':>6}"]
    for size, r in result["sizes"].items():
        lines.append(f"{size:<10} {r['pgd10_images_per_s']:>13.1f} {r['step_s']:>8.3f} {r['step_gflop']:>11.1f} "
                     f"{r['mfu']:>6.3f}")
    if "data_wait_share" in result:
        lines.append(f"data wait: {100 * result['data_wait_share']:.1f}% of a training step "
                     f"({result['data_workers']} workers, synthetic 640x480 JPEGs)")
    return "\n".join(lines)


__all__ = ["bf16_matmul_peak", "data_wait_share", "format_device_bench", "pgd_images_per_s", "run_device_bench",
           "synthetic_photos", "train_step_mfu"]
