"""``advlora ablate``: which part of AdvLoRA matters? Each part switched on and off under one budget.

Starting from a reference configuration, one factor changes at a time: initialisation (cluster, peft default,
PiSSA), the alignment regulariser (off, on), alpha (trainable, fixed), the start mode (residual, zero_alpha)
and the rank (1, 2, 4, 8, 16). Adversarial LoRA (peft) and the zero-shot model are included as anchors. Every
variant trains with the same steps, batch, learning rate, training attack and seed and is evaluated clean and
under PGD at the same eps on the same images. It is a grid, so an interrupted ablation resumes.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

from advlora.experiments.grid import run_grid
from advlora.experiments.spec import GridConfig, load_grid_config
from advlora.report.plots import count

#: factor -> (AdapterConfig field, values tried); each variant changes one field of the reference
FACTORS = {
    "initialisation": ("init", ["cluster", "peft", "pissa"]),
    "alignment": ("align_lambda", [0.0, 0.01, 0.1]),
    "alpha": ("alpha_mode", ["layer", "fixed"]),
    "start mode": ("mode", ["residual", "zero_alpha"]),
    "rank": ("rank", [1, 2, 4, 8, 16]),
}
_SHORT = {"init": "init", "align_lambda": "align", "alpha_mode": "alpha", "mode": "mode", "rank": "rank"}


def reference() -> dict:
    """The configuration every variant departs from: AdapterConfig's defaults for the ablated fields."""
    from advlora.adapters.config import AdapterConfig

    ref = AdapterConfig(method="advlora")
    return {field: getattr(ref, field) for field, _ in FACTORS.values()}


def variants() -> dict[str, tuple[str, dict]]:
    """name -> (factor, AdapterConfig overrides): one field changed; combinations AdapterConfig refuses
    (e.g. zero_alpha with init=peft: no gradient would flow) are left out."""
    from advlora.adapters.config import AdapterConfig
    from advlora.errors import AdvloraError

    ref, out = reference(), {}
    for factor, (field, values) in FACTORS.items():
        for v in values:
            if v == ref[field]:
                continue
            try:
                AdapterConfig(method="advlora", **{**ref, field: v})
            except AdvloraError:
                continue
            out[f"{_SHORT[field]}={v}"] = (factor, {field: v})
    return out


ABLATE: dict = {
    "name": "ablate",
    "model": "tiny-clip",
    "datasets": ["emoji"],
    "seeds": [0],
    "train": {"train": {"steps": 150, "batch_size": 64}, "attack": {"eps": "4/255", "steps": 3}},
    "eval": {"attacks": ["pgd"], "eps": ["4/255"], "steps": 10, "limit": 200, "sanity_limit": 16},
}
QUICK_OVERRIDES: dict = {"train": {"train": {"steps": 10, "batch_size": 16}},
                         "eval": {"limit": 64, "steps": 5, "sanity_limit": 8}}


def reference_label(ref: dict) -> str:
    return "reference (" + ", ".join(f"{_SHORT[k]}={v}" for k, v in ref.items()) + ")"


def methods() -> list[dict]:
    ref = reference()
    out = [{"label": "zero-shot", "method": "frozen"},
           {"label": "adv. LoRA (peft)", "method": "lora", "adapter": {"rank": ref["rank"]}},
           {"label": reference_label(ref), "method": "advlora", "adapter": dict(ref)}]
    out += [{"label": name, "method": "advlora", "adapter": {**ref, **over}} for name, (_, over) in variants().items()]
    return out


def ablate_config(quick: bool = False, steps: int | None = None, overrides: list[str] | None = None,
                  *, tiny_test: bool = False) -> GridConfig:
    from advlora.config import merge

    base = merge(copy.deepcopy(ABLATE), {"methods": methods()})
    if quick or tiny_test:
        base = merge(base, QUICK_OVERRIDES)
    if tiny_test:
        base = merge(base, {"random_model": "clip:test", "train": {"train": {"steps": 2, "batch_size": 8}},
                            "eval": {"limit": 16, "steps": 2}})
    if steps is not None:
        base = merge(base, {"train": {"train": {"steps": steps}}})
    return load_grid_config(None, overrides, base=base)


def ablation_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Variant, factor, trainable, clean and robust r_mean, and the change from the reference."""
    key = next(iter(next(iter(summary["methods"].values()))["robust"]), None)
    ref_label = next(label for label in summary["methods"] if label.startswith("reference"))
    ref = summary["methods"][ref_label]
    factor = {name: f for name, (f, _) in variants().items()}
    header = ["variant", "factor", "trainable", "clean r_mean", f"robust r_mean ({key})", "d clean", "d robust"]
    rows = []
    for label, m in summary["methods"].items():
        c, r = m["clean"].get("r_mean"), m["robust"].get(key, {}).get("r_mean")
        rows.append([label, factor.get(label, "anchor" if label != ref_label else "reference"),
                     count(m.get("trainable")), _f(c), _f(r), _d(c, ref["clean"].get("r_mean")),
                     _d(r, ref["robust"].get(key, {}).get("r_mean"))])
    return header, rows


def _f(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.1f}"


def _d(v: float | None, ref: float | None) -> str:
    return "-" if v is None or ref is None or math.isnan(v) or math.isnan(ref) else f"{v - ref:+.1f}"


def findings(summary: dict) -> list[tuple[str, list[str]]]:
    """Per factor: the variant with the best robust r_mean, read off the numbers."""
    header, rows = ablation_rows(summary)
    lines = [" | ".join(header)] + [" | ".join(r) for r in rows]
    ref = next(r for r in rows if r[1] == "reference")
    out = []
    for f in FACTORS:
        cands = [ref] + [r for r in rows if r[1] == f]
        best = max(cands, key=lambda r: float(r[4]) if r[4] != "-" else -1)
        out.append(f"{f}: best robust r_mean with {best[0]} ({best[4]}); "
                   + ", ".join(f"{r[0]} {r[6]}" for r in cands if r is not ref) + " (change vs reference)")
    out.append("One seed on a few hundred images: read changes below about 1 point of r_mean as noise; "
               "`--seeds`-style repetitions (advlora grid) are needed before calling a part helpful.")
    return [("Ablation: change from the reference, one factor at a time", lines), ("Which part helps", out)]


def run_ablation(out: str | Path, *, quick: bool = False, steps: int | None = None,
                 overrides: list[str] | None = None, tiny_test: bool = False,
                 report_only: bool = False, jobs: int = 1) -> tuple[dict, str]:
    cfg = ablate_config(quick, steps, overrides, tiny_test=tiny_test)
    summary, _ = run_grid(cfg, out, title="advlora ablate: AdvLoRA's parts, one at a time", extra=findings,
                          report_only=report_only, jobs=jobs)
    header, rows = ablation_rows(summary)
    from advlora.report.tables import metrics_table

    body = {r[0]: dict(zip(header[1:], r[1:])) for r in rows}
    table = metrics_table(body, columns=header[1:], first="variant")
    threat = next(iter(next(iter(summary["methods"].values()))["robust"].values()), {}).get("threat", "")
    return summary, table + f"\n\nr_mean in %; threat model: {threat}"
