"""``advlora bench``: efficiency as ratios of things measured side by side in one run (P1-P8)."""
from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from advlora.bench import cases
from advlora.bench.retrieval_case import measure_retrieval
from advlora.bench.suite_case import classification_row, have_torchattacks, measure_suite, reduction_rows
from advlora.bench.timing import run_isolated
from advlora.errors import AdvloraError, choices_error
from advlora.io import write_json

SIZES = ("tiny", "vit-b32", "blip-base", "openclip-vit-b32")
#: ratio key -> (target description, test on the value); the targets of the issue
TARGETS = {
    "p1_attack": ("<= 1.05", lambda v: v <= 1.05),
    "p2_step_vs_lora": ("<= 1.05", lambda v: v <= 1.05),
    "p2_step_full_vs_advlora": ("(reported)", None),
    "p2_memory_vs_full": ("<= 0.60 (ViT-B/32, batch 16)", lambda v: v <= 0.60),
    "p2_memory_vs_full_recompute": ("<= 0.60 (ViT-B/32, batch 16)", lambda v: v <= 0.60),
    "p2_memory_vs_full_glibc": ("(reported)", None),
    "p2_step_recompute_vs_advlora": ("(reported)", None),
    "p3_params": (">= 100 (ViT-B/32, BLIP-base)", lambda v: v >= 100),
    "p4_init": ("<= 0.02 (ViT-B/32)", lambda v: v <= 0.02),
    "p5_mfu": (">= 0.50 (ViT-B/32)", lambda v: v >= 0.50),
    "p6_eval_time": ("<= 1.20", lambda v: v <= 1.20),
    "p6_eval_extra_gib": ("<= 1.00", lambda v: v <= 1.00),
    "p7_suite_vs_members": ("<= 1.00", lambda v: v <= 1.00),
    "p7_exhaustive_vs_members": ("<= 1.05", lambda v: v <= 1.05),
    "p8_vs_autoattack": ("<= 1.00, same R@1 (torchattacks; --exit-k 1)", lambda v: v <= 1.00),
    "p8_exit10_vs_autoattack": ("(reported; default --exit-k 10)", None),
}


@dataclass
class BenchConfig:
    size: str = "vit-b32"
    batch: int = 16
    rank: int = 8
    repeats: int = 3
    warmup: int = 1
    retrieval_images: int = 5000
    retrieval_texts: int = 25000
    #: images of the suite measurement (P7) and of each AutoAttack reduction row (P8; 0: skipped)
    suite_images: int = 8
    autoattack_images: int = 100

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise choices_error("bench size", self.size, SIZES)
        for name, (flag, low) in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise AdvloraError(f"{flag} must be an integer >= {low}, got {value!r}"
                                   + (" (0 leaves the figure out)" if low == 0 and name != "warmup" else ""))


#: each count of ``BenchConfig`` -> (its option, its smallest value; 0: the figure is left out), checked before
#: any work
LIMITS = {"batch": ("--batch-size", 1), "rank": ("--rank", 1), "repeats": ("--repeats", 1), "warmup": ("warmup", 0),
          "retrieval_images": ("--retrieval-images", 1), "retrieval_texts": ("--retrieval-texts", 1),
          "suite_images": ("--suite-images", 0), "autoattack_images": ("--autoattack-images", 0)}


def run_bench(cfg: BenchConfig, details: dict | None = None) -> dict:
    """All measurements; returns ``{"ratios": {...}, "details": {...}, "targets": {...}}``. ``details``: the
    dict the measurements are written into as they finish, so that a caller keeps them when a later one fails."""
    t0 = time.perf_counter()
    base = cases.base_model(cfg.size)
    images, captions = cases.make_batch(base, cfg.batch)
    details = {} if details is None else details
    details.update(cases.measure_attack(base, images, captions, cfg.repeats, cfg.warmup))
    details.update(cases.measure_steps(base, images, captions, cfg.rank, cfg.repeats, cfg.warmup))
    del base
    # peak memory, each in a fresh process; the ratio is the median of ``repeats`` processes per method
    # (alternating), with freed buffers returned to the OS so that the peak is the memory in use; beside it, one
    # process per method with activation recomputation on both sides, and one with glibc's default allocator
    settings = {"": (False, True), "_recompute": (True, True), "_glibc": (False, False)}  # (recompute, live)
    for suffix, (recompute, live) in settings.items():
        runs = cfg.repeats if suffix == "" else 1
        mems: dict[str, list[float]] = {"advlora": [], "full": []}
        for _ in range(runs):
            for method in mems:
                mems[method].append(run_isolated(cases.peak_memory_of_training, cfg.size, method, cfg.rank,
                                                 cfg.batch, 2, recompute, live))
        mem_adv, mem_full = (statistics.median(mems[m]) for m in ("advlora", "full"))
        details[f"advlora_peak_gib{suffix}_runs"] = [m / 2**30 for m in mems["advlora"]]
        details[f"full_peak_gib{suffix}_runs"] = [m / 2**30 for m in mems["full"]]
        details[f"advlora_peak_gib{suffix}"] = mem_adv / 2**30
        details[f"full_peak_gib{suffix}"] = mem_full / 2**30
        details[f"p2_memory_vs_full{suffix}"] = mem_adv / mem_full
    details.update(run_isolated(measure_retrieval, cfg.retrieval_images, cfg.retrieval_texts, 512, cfg.repeats,
                                cfg.warmup))
    if cfg.suite_images:
        details.update(measure_suite(cases.base_model(cfg.size), cfg.suite_images))
    if cfg.autoattack_images and have_torchattacks():
        rows = reduction_rows(cfg.autoattack_images) + [classification_row()]
        details["autoattack_rows"] = rows
        details["p8_vs_autoattack"] = max(r["p8_vs_autoattack"] for r in rows)
        details["p8_same_r1"] = all(abs(r["ours_r1"] - r["aa_acc"]) < 1e-6 for r in rows)
        details["p8_exit10_vs_autoattack"] = max(b["p8_vs_autoattack"] for r in rows for b in r["by_exit_k"]
                                                 if b["exit_k"] == 10) if rows[0]["by_exit_k"][1:] else None
    ratios = {k: details[k] for k in TARGETS if details.get(k) is not None}
    met = {k: (None if test is None or k not in ratios else bool(test(ratios[k]))
               and (k != "p8_vs_autoattack" or details["p8_same_r1"])) for k, (_, test) in TARGETS.items()}
    return {"ratios": ratios, "met": met, "details": details, "config": cfg.__dict__,
            "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                        "cuda": torch.cuda.is_available()}, "wall_s": time.perf_counter() - t0}


def format_bench(result: dict, rows_only: bool = False) -> str:
    """The table ``advlora bench`` prints: ratio, target, met, and the medians it came from (``rows_only``: the
    AutoAttack rows alone)."""
    d, r = result["details"], result["ratios"]
    if rows_only:
        return "\n".join(autoattack_lines(d))
    rows = [("ratio", "value", "target", "met")]
    for k, (target, _) in TARGETS.items():
        met = result["met"][k]
        value = f"{r[k]:.3f}" if k in r else "(not run)"
        rows.append((k, value, target, "-" if met is None else ("yes" if met else "NO")))
    w = [max(len(x[i]) for x in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(row)) for row in rows]
    lines.append("")
    lines.append("medians: fwd+bwd {fwd_bwd_s:.3f}s, PGD-10 {pgd_s:.3f}s; train step (PGD-3 + update) advlora "
                 "{advlora_step_s:.3f}s, lora {lora_step_s:.3f}s, full {full_step_s:.3f}s".format(**d))
    lines.append("params: full {full_trainable:,} / advlora {advlora_trainable:,}; cluster init {advlora_init_s:.2f}s "
                 "vs adversarial epoch of 1,000 samples {adv_epoch_1000_s:.1f}s".format(**d))
    runs = lambda k: "/".join(f"{v:.2f}" for v in d.get(k, []))  # noqa: E731
    lines.append("peak memory in use above process start (median of fresh processes): advlora {advlora_peak_gib:.2f} "
                 "GiB ({a}), full {full_peak_gib:.2f} GiB ({f})".format(**d, a=runs("advlora_peak_gib_runs"),
                                                                      f=runs("full_peak_gib_runs")))
    lines.append("  with activation recomputation (both): advlora {advlora_peak_gib_recompute:.2f} GiB, full "
                 "{full_peak_gib_recompute:.2f} GiB; step time with / without {p2_step_recompute_vs_advlora:.3f}"
                 .format(**d))
    lines.append("  glibc's default allocator (its heap keeps freed buffers): advlora {advlora_peak_gib_glibc:.2f} "
                 "GiB, full {full_peak_gib_glibc:.2f} GiB".format(**d))
    lines.append("train step {step_gflop:.1f} GFLOP -> {achieved_gflops:.1f} GFLOP/s; matmul peak {peak_gflops:.1f} "
                 "GFLOP/s".format(**d))
    lines.append("retrieval 5k x 25k {retrieval_s:.3f}s vs matmul {matmul_s:.3f}s; extra peak "
                 "{p6_eval_extra_gib:.3f} GiB".format(**d))
    lines.append("suite on {suite_images} images: early exit {suite_early_s:.1f}s, exhaustive "
                 "{suite_exhaustive_s:.1f}s, members alone {suite_members_s:.1f}s; {suite_images_per_s:.2f} "
                 "images/s".format(**d)
                 if "suite_early_s" in d else "suite: not run (--suite-images 0)")
    lines += autoattack_lines(d)
    return "\n".join(lines)


def autoattack_lines(d: dict) -> list[str]:
    """P8's rows: AutoAttack's robust accuracy and wall, and the suite's at each exit rank."""
    lines = []
    for row in d.get("autoattack_rows", []):
        norm = "" if row.get("norm", "linf") == "linf" else f"{row['norm']} "      # linf rows read as before
        lines.append(("AutoAttack reduction {data} " + norm + "{eps} ({aa_images} images, clean R@1 {clean_r1:.1f}): "
                      "AutoAttack robust acc. {aa_acc:.1f} in {aa_s:.1f}s").format(**row))
        for b in row.get("by_exit_k", [row]):
            lines.append("  advlora standard --exit-k {exit_k}: i2t R@1 {ours_r1:.1f} in {ours_s:.1f}s, ratio "
                         "{p8_vs_autoattack:.2f}".format(**b))
    if "autoattack_rows" not in d:
        lines.append("AutoAttack reduction: not run (torchattacks not importable, or --autoattack-images 0)")
    return lines


def write_bench(result: dict, out: Path) -> Path:
    path = Path(out) / "bench.json"
    write_json(path, result)
    json.loads(path.read_text())  # what we wrote must read back
    return path
