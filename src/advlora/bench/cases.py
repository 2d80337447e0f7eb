"""The measurements of ``advlora bench`` (P1-P5), each on a randomly initialised model of a named size.

Every figure is a ratio of two things timed side by side in the same process on the same batch:
- P1: PGD-k / (k x one forward+backward w.r.t. the images), the clean features known as in the evaluation;
- P2: AdvLoRA adversarial training step / peft LoRA step (same rank, same targets); full fine-tuning step /
  AdvLoRA step; AdvLoRA step with activation recomputation / without; peak memory of AdvLoRA / full
  fine-tuning (each in its own fresh process), without and with recomputation on both sides;
- P3: trainable parameters of full fine-tuning / AdvLoRA;
- P4: AdvLoRA's cluster initialisation (k-means + alignment, the whole ``attach_adapter``) / one adversarial
  epoch of 1,000 samples (steps of the measured batch, extrapolated to 1,000 samples);
- P5: FLOP/s achieved by a training step (FLOPs counted by ``torch.utils.flop_counter``) / the fp32 matmul
  peak measured in the same run.
A training step is the trainer's own code: PGD-3 on the batch (``advlora.training.step.attack_batch``), the
loss module (``TrainTask``), backward, AdamW step.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch

from advlora.adapters import adapter_info, attach_adapter, method_of, regularization_loss
from advlora.adapters.method import AdapterMethod, names, registered
from advlora.attacks import ThreatModel, pgd
from advlora.attacks._utils import loss_and_grad
from advlora.attacks.objectives import contrastive
from advlora.bench.open_clip_size import OPEN_CLIP_SIZES, open_clip_model
from advlora.bench.timing import current_rss_bytes, median_time, peak_rss_bytes, release_freed_memory, reset_peak_rss
from advlora.models.prompts import for_templates
from advlora.models.recompute import enable_recompute
from advlora.models.tiny import random_for_size
from advlora.training.config import AttackConfig
from advlora.training.setup import trainable_towers
from advlora.training.step import Dist, TrainTask, attack_batch, class_positives

PGD_STEPS = 10


def make_batch(model, batch: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, model.image_size, model.image_size, generator=g)
    words = ["red", "apple", "dog", "face", "flag", "japan", "rocket", "house", "green", "heart", "blue", "car"]
    captions = [" ".join(words[(i * 7 + j) % len(words)] for j in range(6)) for i in range(batch)]
    return images, captions


def base_model(size: str, seed: int = 0):
    """A random model of the family that declares ``size`` (``advlora.models.family``: each family's sizes), or
    open_clip-format weights read through the open_clip converter."""
    if size in OPEN_CLIP_SIZES:
        return open_clip_model(size, seed=seed)
    return random_for_size(size, seed=seed)


def adapted(base, method: str, rank: int, **options):
    """A copy of ``base`` with ``method`` attached (``options``: other ``AdapterConfig`` fields, e.g. ``init``)."""
    model = copy.deepcopy(base)
    return attach_adapter(model, method, rank=rank, **options)


def declared(declaration: AdapterMethod | None):
    """``declaration`` registered for a ``with`` block unless its name already is: a method declared only in the
    parent process (a plugin, a test's throw-away) is then known in the fresh child of ``run_isolated``."""
    if declaration is None or declaration.name in names():
        return nullcontext()
    return registered(declaration)


def interleaved_medians(steps: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    """Median wall time (s) of each step, timed in rounds that rotate their order, so that machine noise hits
    every step alike and each step takes each place equally often (a step timed right after full fine-tuning's,
    which frees its gradients and optimizer state, is slowed by it)."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    order = list(steps)
    for i in range(repeats):
        for name in order[i % len(order):] + order[:i % len(order)]:
            times[name].append(median_time(steps[name], 1, 0))
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


#: the template of the class-prompt classifier of ``train_step_fn(classes=...)``
CLASS_TEMPLATE = ("a photo of a {}.",)


def class_names(n: int) -> list[str]:
    """``n`` distinct two-word class names from the bench's words."""
    words = ["red", "apple", "dog", "face", "flag", "japan", "rocket", "house", "green", "heart", "blue", "car"]
    return [f"{words[i % len(words)]} {words[(i // len(words) + i) % len(words)]} {i // len(words)}"
            for i in range(n)]


def train_step_fn(model, images: torch.Tensor, captions: list[str], eps: str = "4/255", attack_steps: int = 3,
                  classes: int = 0):
    """One adversarial training step of the trainer's code, as a closure (AdamW over the trainable parameters).

    ``classes`` 0: the batch's captions are the text side (retrieval; encoded with gradient when a text-side
    parameter trains, a learned prompt included). ``classes`` C: the class-prompt classifier over C class names
    (a classification set; image i labelled i mod C), as the trainer runs it: TeCoA's cross-entropy over the
    classes, the class embeddings fixed, or re-encoded at every step (the attack's without, the update's with
    gradient) for a method that learns its text side (``AdapterMethod.learns_class_text``)."""
    cfg = AttackConfig(name="pgd", threat=ThreatModel(eps=eps, steps=attack_steps))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    if classes:
        names, encoder = class_names(classes), for_templates(model, CLASS_TEMPLATE)
        method = method_of(model)
        learns = method is not None and method.learns_class_text
        positives = class_positives(torch.arange(len(images)) % classes, classes)
        with torch.no_grad():
            fixed = None if learns else encoder.encode_text(names)
        task = TrainTask(model, cfg, Dist(), regularizer=regularization_loss, classes=True,
                         class_text=(lambda: encoder.encode_text(names)) if learns else None)
        tokens = None
    else:
        task = TrainTask(model, cfg, Dist(), regularizer=regularization_loss)
        tokens = model.tokenize(captions)
        positives = torch.eye(len(captions), dtype=torch.bool)
        learns = bool({"text", "other"} & trainable_towers(model))

    def text_sides() -> tuple[torch.Tensor | None, torch.Tensor]:
        """(the update's fixed text, or None: encoded with gradient; the attack's text)."""
        if classes:
            if not learns:
                return fixed, fixed
            with torch.no_grad():
                return None, encoder.encode_text(names)
        with torch.no_grad():
            text = model.encode_text(tokens)
        return (None if learns else text), text

    def step() -> None:
        text_fixed, text_attack = text_sides()
        adv = attack_batch(model, cfg, images, text_attack, positives, gen)
        model.train()
        loss, _, _ = task(images, adv, tokens, text_fixed, positives)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.eval()

    return step


def measure_attack(model, images: torch.Tensor, captions: list[str], repeats: int, warmup: int,
                   steps: int = PGD_STEPS) -> dict[str, float]:
    """P1: PGD-k time / (k x one forward+backward of the same objective on the same batch). The objective is
    built as the evaluation builds it, with the clean images' features it has already measured, so the clean
    image competes for the worst case without a forward; PGD-k is then k forward+backward and one forward."""
    with torch.no_grad():
        text = model.encode_text(captions)
        clean = model.encode_image(images)
    objective = contrastive(model, text, torch.eye(len(captions), dtype=torch.bool), clean_features=clean)
    # interleaved, the same number of times each, so that a change of the machine's load hits both alike
    fb = lambda: loss_and_grad(objective, images.clone())  # noqa: E731
    attack = lambda: pgd(objective, images, ThreatModel(eps=4 / 255, steps=steps))  # noqa: E731
    for _ in range(warmup):
        fb(), attack()
    t_fb, t_pgd = [], []
    for _ in range(repeats):
        t_fb.append(median_time(fb, 1, 0))
        t_pgd.append(median_time(attack, 1, 0))
    t_fb, t_pgd = statistics.median(t_fb), statistics.median(t_pgd)
    return {"fwd_bwd_s": t_fb, "pgd_s": t_pgd, "p1_attack": t_pgd / (steps * t_fb)}


def measure_steps(base, images, captions, rank: int, repeats: int, warmup: int) -> dict[str, float]:
    """P2 (time), P3, P4, P5 on one process."""
    out: dict[str, float] = {}
    t = time.perf_counter()
    adv = adapted(base, "advlora", rank)
    out["advlora_init_s"] = time.perf_counter() - t
    lora = adapted(base, "lora", rank)
    full = adapted(base, "full", rank)
    adv_recompute = copy.deepcopy(adv)
    enable_recompute(adv_recompute)
    steps = {name: train_step_fn(m, images, captions) for name, m in
             (("advlora", adv), ("lora", lora), ("full", full), ("advlora_recompute", adv_recompute))}
    med = interleaved_medians(steps, repeats, warmup)
    out.update({f"{k}_step_s": v for k, v in med.items()})
    out["p2_step_vs_lora"] = med["advlora"] / med["lora"]
    out["p2_step_full_vs_advlora"] = med["full"] / med["advlora"]
    out["p2_step_recompute_vs_advlora"] = med["advlora_recompute"] / med["advlora"]
    info_adv, info_full = adapter_info(adv), adapter_info(full)
    out["advlora_trainable"] = info_adv["trainable"]
    out["full_trainable"] = info_full["trainable"]
    out["p3_params"] = info_full["trainable"] / info_adv["trainable"]
    epoch_s = math.ceil(1000 / len(images)) * med["advlora"]
    out["adv_epoch_1000_s"] = epoch_s
    out["p4_init"] = out["advlora_init_s"] / epoch_s
    flops = count_flops(steps["advlora"])
    peak = matmul_peak_flops(repeats, warmup)
    out["step_gflop"] = flops / 1e9
    out["achieved_gflops"] = flops / med["advlora"] / 1e9
    out["peak_gflops"] = peak / 1e9
    out["p5_mfu"] = flops / med["advlora"] / peak
    return out


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_peak_flops(repeats: int = 5, warmup: int = 1, n: int = 2048) -> float:
    """fp32 (bf16 on GPU) matmul FLOP/s of an n x n x n product on this machine, now."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    return 2 * n ** 3 / median_time(lambda: a @ b, repeats, warmup)


def peak_memory_of_training(size: str, method: str, rank: int, batch: int, steps: int = 2,
                            recompute: bool = False, live: bool = True, options: dict | None = None,
                            declaration: AdapterMethod | None = None, classes: int = 0) -> float:
    """Peak resident memory (bytes) of adversarial training steps, above the fresh process's own size.

    Runs in a child process (``run_isolated``): the model, its adapter, optimizer state and activations count.
    ``recompute``: activation checkpointing in the attack and the update (``model.gradient_checkpointing``).
    ``live``: freed buffers go back to the OS (``timing.release_freed_memory``), so the peak is that of the
    memory in use; False keeps glibc's default, whose heap also holds freed activation buffers.
    ``options``: other ``AdapterConfig`` fields; ``declaration``: the method's, registered here when the fresh
    process does not know it (``declared``); ``classes``: the step of ``train_step_fn``'s class-prompt classifier.
    """
    with declared(declaration):
        return _peak_memory(size, method, rank, batch, steps, recompute, live, options or {}, classes)


def _peak_memory(size, method, rank, batch, steps, recompute, live, options, classes=0) -> float:
    if live:
        release_freed_memory()
    reset_peak_rss()
    start = current_rss_bytes()
    model = attach_adapter(base_model(size), method, rank=rank, **options)  # in place: no second copy of the weights
    if recompute:
        enable_recompute(model)
    images, captions = make_batch(model, batch)
    fn = train_step_fn(model, images, captions, classes=classes)
    for _ in range(steps):
        fn()
    return float(peak_rss_bytes() - start)
