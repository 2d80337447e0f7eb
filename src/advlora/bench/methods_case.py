"""``advlora bench --methods``: the cost of every declared adapter method, side by side in one run.

One row per declared method and per alias (``pissa``: lora with init=pissa), read from the registry
(``advlora.adapters.method``) at the time of the run, so a method declared by a plugin is a row without any
change here. Each row: trainable parameters; the adversarial training step (``cases.train_step_fn``: PGD-3 and an
AdamW update) timed against LoRA's in one process, interleaved rounds, medians (``cases.interleaved_medians``);
peak memory of two such steps in a fresh process per method against full fine-tuning's (``cases.
peak_memory_of_training``, freed buffers returned to the OS), median of ``repeats`` processes. A method that trains
nothing (frozen) has no step; one the model's family or layers do not support says so in its note. A step over
``SLOW`` x LoRA's carries the method's declared ``cost_note``. ``classes`` C > 0 times the step on a
classification batch instead of captions: the class-prompt classifier over C class names, as the trainer runs it
on a class folder (a prompt method re-encodes its class prompts with gradient at every step), the setting the
prompt methods are defined in.
"""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from advlora.adapters import adapter_info
from advlora.adapters.method import AdapterMethod, choices, resolve
from advlora.bench import cases
from advlora.bench.timing import run_isolated
from advlora.errors import AdvloraError

#: a step slower than this many times LoRA's carries a note saying why
SLOW = 1.5
#: the references of the ratios: step time against LoRA's, peak memory against full fine-tuning's
STEP_REFERENCE, MEMORY_REFERENCE = "lora", "full"


@dataclass
class MethodsConfig:
    size: str = "vit-b32"
    batch: int = 16
    rank: int = 8
    repeats: int = 3
    warmup: int = 1
    #: 0: the batch's captions (retrieval); C: the class-prompt classifier over C class names
    classes: int = 0


@dataclass
class Row:
    """One method's figures (None: not measured, with ``note`` saying why)."""

    method: str
    declared: str
    options: dict
    trainable: int | None = None
    step_s: float | None = None
    step_vs_lora: float | None = None
    peak_gib: float | None = None
    peak_vs_full: float | None = None
    note: str = ""


def variants() -> list[tuple[str, AdapterMethod, dict]]:
    """(row name, declaration, config fields) of every declared method and alias, in the registry's order."""
    return [(name, *resolve(name)) for name in choices()]


def measure_methods(cfg: MethodsConfig) -> dict:
    """Every method's row; returns ``{"rows": [...], "config": ..., "machine": ..., "wall_s": ...}``."""
    t0 = time.perf_counter()
    base = cases.base_model(cfg.size)
    images, captions = cases.make_batch(base, cfg.batch)
    rows, models = [], {}
    for name, decl, options in variants():
        row = Row(name, decl.name, options)
        rows.append(row)
        try:
            model = cases.adapted(base, decl.name, cfg.rank, **options)
        except AdvloraError as e:
            row.note = f"not supported here: {e}"
            continue
        row.trainable = adapter_info(model)["trainable"]
        if not decl.trains:
            row.note = "trains nothing (no training step)"
            continue
        models[name] = model
    for ref in (STEP_REFERENCE, MEMORY_REFERENCE):
        if ref not in models:
            raise AdvloraError(f"bench --methods: the reference method {ref} cannot train {cfg.size} here")
    steps = {name: cases.train_step_fn(m, images, captions, classes=cfg.classes) for name, m in models.items()}
    med = cases.interleaved_medians(steps, cfg.repeats, cfg.warmup)
    del steps, models, base
    mems: dict[str, list[float]] = {name: [] for name in med}
    by_name = {r.method: r for r in rows}
    for _ in range(cfg.repeats):  # one fresh process per method and round, alternating
        for name in mems:
            r = by_name[name]
            mems[name].append(run_isolated(cases.peak_memory_of_training, cfg.size, r.declared, cfg.rank, cfg.batch,
                                           2, False, True, r.options, resolve(name)[0], cfg.classes) / 2**30)
    peaks = {name: statistics.median(v) for name, v in mems.items()}
    for name in med:
        r = by_name[name]
        r.step_s, r.peak_gib = med[name], peaks[name]
        r.step_vs_lora = med[name] / med[STEP_REFERENCE]
        r.peak_vs_full = peaks[name] / peaks[MEMORY_REFERENCE]
        if r.step_vs_lora > SLOW:
            r.note = resolve(name)[0].cost_note or f"over {SLOW}x LoRA's step (cause not declared)"
    return {"rows": [asdict(r) for r in rows], "config": asdict(cfg), "slow_above": SLOW,
            "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                        "cuda": torch.cuda.is_available()}, "wall_s": time.perf_counter() - t0}


def methods_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table ``advlora bench --methods`` prints (cells as printed): method, trainable,
    step s, step/LoRA, peak GiB, peak/full, note."""
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    header = ["method", "trainable", "step s", "step/LoRA", "peak GiB", "peak/full", "note"]
    rows = []
    for r in result["rows"]:
        variant = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        label = f"{r['method']} ({r['declared']}, {variant})" if variant else r["method"]
        rows.append([label, fmt(r["trainable"], ","), fmt(r["step_s"], ".3f"), fmt(r["step_vs_lora"], ".2f"),
                     fmt(r["peak_gib"], ".2f"), fmt(r["peak_vs_full"], ".2f"), r["note"]])
    return header, rows


def format_methods(result: dict) -> str:
    """The table ``advlora bench --methods`` prints (``methods_rows``), columns padded to their widest cell."""
    header, rows = methods_rows(result)
    table = [header, *rows]
    w = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(row)).rstrip() for row in table)
