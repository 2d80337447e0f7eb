"""``advlora bench --data``: the streaming data path at growing set sizes, measured side by side (CPU).

A synthetic COCO-shaped set: photo-sized (640 x 480) JPEGs and a Karpathy ``dataset_coco.json`` (5 captions per
image, all in the ``train`` split), written once under ``$ADVLORA_HOME/bench/photos`` and shared by every size
(the set of n images is the first n). For each size, in a fresh process (``run_isolated``): the peak resident
memory above the process's size after its imports, and the time from reading the annotations to the end of the
first training step (decode at 224 px, ViT-B/32's input, one forward and backward of the test-size CLIP),
streaming with the decoding in the training process (so that all memory is counted in one process). Beside
them: decode throughput with 1 and 2 DataLoader workers, and the share of a training step spent waiting for
data with 1 and 2 workers.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from advlora.bench.dist_eval import format_distributed_eval
from advlora.bench.timing import current_rss_bytes, peak_rss_bytes, reset_peak_rss, run_isolated
from advlora.data import load_dataset
from advlora.io import advlora_home, atomic_write_text
from advlora.models.tiny import random_model
from advlora.training.data import EpochSampler, LoaderConfig, TrainBatches

SIZES = (1000, 4000, 16000)
#: the ratios' targets: memory and time to the first step nearly flat in the set size
TARGETS = {"memory_ratio": 1.10, "first_step_ratio": 1.5}
DECODE_SIZE = 224
BATCH = 32


def photo_set(n: int, root: Path | None = None, seed: int = 0) -> Path:
    """The Karpathy file of the first ``n`` synthetic photos (JPEGs written once, shared by all sizes)."""
    from PIL import Image

    root = Path(root or advlora_home() / "bench" / "photos")
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    images = []
    for i in range(n):
        small = (torch.rand(6, 8, 3, generator=g) * 255).to(torch.uint8).numpy()  # drawn even when cached
        path = root / f"{i:06d}.jpg"
        if not path.exists():
            Image.fromarray(small).resize((640, 480), Image.BILINEAR).save(path, quality=85)
        images.append({"filepath": "", "filename": path.name, "split": "train", "imgid": i,
                       "sentences": [{"raw": f"a synthetic photo number {i} view {k}"} for k in range(5)]})
    ann = root / f"dataset_coco_{n}.json"
    if not ann.exists():
        atomic_write_text(ann, json.dumps({"images": images, "dataset": "coco"}))
    return ann


def _model_and_optimizer():
    model = random_model("clip", "test", seed=0)
    model.hf_model.requires_grad_(True)
    return model, torch.optim.SGD(model.parameters(), lr=1e-3)


def _train_step(model, optimizer, pixels: torch.Tensor, texts: list[str]) -> None:
    image = model.encode_image(pixels.float().div_(255.0))
    text = model.encode_text(texts)
    logits = model.logit_scale * image @ text.t()
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(texts)))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def first_step(annotation: str) -> dict:
    """In a fresh process: peak memory above its start and seconds to the end of the first training step."""
    base = current_rss_bytes()
    reset_peak_rss()
    t0 = time.perf_counter()
    ds = load_dataset(annotation, "train")
    sampler = EpochSampler(ds, BATCH, seed=0)
    source = TrainBatches(ds, sampler, DECODE_SIZE, config=LoaderConfig(storage="stream", workers=0))
    model, optimizer = _model_and_optimizer()
    batch = source.batch(0)
    _train_step(model, optimizer, batch.pixels, [ds.captions[j] for j in batch.captions.tolist()])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_bytes": peak_rss_bytes() - base, "images": len(ds)}


def throughput(annotation: str, workers: int, steps: int) -> dict:
    """With ``workers`` DataLoader workers: the share of a training step spent waiting for data, then (fresh
    workers, nothing else running) images decoded per second from the workers' start."""
    ds = load_dataset(annotation, "train")
    sampler = EpochSampler(ds, BATCH, seed=0)
    config = LoaderConfig(storage="stream", workers=workers)
    texts = lambda b: [ds.captions[j] for j in b.captions.tolist()]  # noqa: E731
    model, optimizer = _model_and_optimizer()
    _train_step(model, optimizer, torch.zeros(BATCH, 3, DECODE_SIZE, DECODE_SIZE, dtype=torch.uint8),
                texts(sampler.batch(0)))  # the first call's one-time costs are not a data wait
    source = TrainBatches(ds, sampler, DECODE_SIZE, config=config)
    source.batch(0)  # the workers started
    wait = total = 0.0
    for step in range(1, steps + 1):
        t = time.perf_counter()
        batch = source.batch(step)
        waited = time.perf_counter() - t
        _train_step(model, optimizer, batch.pixels, texts(batch))
        wait, total = wait + waited, total + time.perf_counter() - t
    source.close()
    source = TrainBatches(ds, sampler, DECODE_SIZE, config=config)
    t0 = time.perf_counter()
    for step in range(steps):
        source.batch(step)
    decode_s = time.perf_counter() - t0
    source.close()
    return {"images_per_s": steps * BATCH / decode_s, "wait_share": wait / total, "step_s": total / steps}


def run_data_bench(sizes: tuple[int, ...] = SIZES, steps: int = 10, repeats: int = 2, eval_hook=None) -> dict:
    """Every measurement (first-step figures: medians of ``repeats`` fresh processes per size, sizes alternating).

    ``eval_hook``: a callable returning the distributed-evaluation figures (2 vs 1 processes, e.g.
    ``dist_eval.measure_distributed_eval``), run after the data figures and printed beside them.
    """
    t0 = time.perf_counter()
    anns = {n: str(photo_set(n)) for n in sorted(sizes, reverse=True)}  # the largest writes every photo once
    runs: dict[int, list[dict]] = {n: [] for n in sorted(anns)}
    for _ in range(repeats):
        for n in runs:
            runs[n].append(run_isolated(first_step, anns[n]))
    first = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
    lo, hi = min(anns), max(anns)
    mid = sorted(anns)[len(anns) // 2]
    flow = {w: run_isolated(throughput, anns[mid], w, steps) for w in (1, 2)}
    ratios = {"memory_ratio": first[hi]["peak_bytes"] / max(1, first[lo]["peak_bytes"]),
              "first_step_ratio": first[hi]["seconds"] / first[lo]["seconds"],
              "decode_2_vs_1_workers": flow[2]["images_per_s"] / flow[1]["images_per_s"]}
    return {"sizes": sorted(anns), "first_step": first, "first_step_runs": runs, "throughput": flow, "ratios": ratios,
            "met": {k: ratios[k] <= v for k, v in TARGETS.items()}, "lo": lo, "hi": hi,
            "distributed_eval": eval_hook() if eval_hook is not None else None, "wall_s": time.perf_counter() - t0}


def format_data_bench(result: dict) -> str:
    """The lines ``advlora bench --data`` prints."""
    r, lo, hi = result["ratios"], result["lo"], result["hi"]
    lines = [f"{'images':>8}  {'peak memory':>12}  {'first step':>10}"]
    for n in result["sizes"]:
        f = result["first_step"][n]
        lines.append(f"{n:>8,}  {f['peak_bytes'] / 2**20:>9.1f} MiB  {f['seconds']:>9.2f}s")
    for key, label in (("memory_ratio", "memory"), ("first_step_ratio", "time to first step")):
        verdict = "yes" if result["met"][key] else "NO"
        lines.append(f"{label}({hi:,}) / ({lo:,}) = {r[key]:.3f} (target <= {TARGETS[key]}; met: {verdict})")
    t = result["throughput"]
    lines.append(f"decode at {DECODE_SIZE} px: {t[1]['images_per_s']:.0f} images/s with 1 worker, "
                 f"{t[2]['images_per_s']:.0f} with 2 (x{r['decode_2_vs_1_workers']:.2f}); waiting for data: "
                 f"{100 * t[1]['wait_share']:.0f}% of a {t[1]['step_s']:.3f}s step with 1 worker, "
                 f"{100 * t[2]['wait_share']:.0f}% of {t[2]['step_s']:.3f}s with 2")
    lines.append(format_distributed_eval(result.get("distributed_eval")))
    return "\n".join(lines)
