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

from advlora.adapters.config import AdapterConfig
from advlora.config import merge
from advlora.errors import AdvloraError
from advlora.experiments import summarize as S
from advlora.experiments.grid import run_grid
from advlora.experiments.report import fmt
from advlora.experiments.spec import GridConfig, load_grid_config
from advlora.report.plots import count, paired_changes
from advlora.report.tables import metrics_table

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
    ref = AdapterConfig(method="advlora")
    return {field: getattr(ref, field) for field, _ in FACTORS.values()}


def variants() -> dict[str, tuple[str, dict]]:
    """name -> (factor, AdapterConfig overrides): one field changed; combinations AdapterConfig refuses
    (e.g. zero_alpha with init=peft: no gradient would flow) are left out."""
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
    "datasets": ["emoji-downstream"],  # the task tiny-clip is adapted to (pre-trained on emoji-source)
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
    base = merge(copy.deepcopy(ABLATE), {"methods": methods()})
    if quick or tiny_test:
        base = merge(base, QUICK_OVERRIDES)
    if tiny_test:
        base = merge(base, {"random_model": "clip:test", "train": {"train": {"steps": 2, "batch_size": 8}},
                            "eval": {"limit": 16, "steps": 2}})
    if steps is not None:
        base = merge(base, {"train": {"train": {"steps": steps}}})
    return load_grid_config(None, overrides, base=base)


#: two-sided 95% quantiles of Student's t by degrees of freedom (1-10); beyond, 2.0
_T95 = [12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23]


def paired_change(values: dict[int, float], ref: dict[int, float]) -> tuple[float, float | None, int]:
    """Mean change from the reference over the seeds both have (each seed trains both on the same data order
    and adapter seed, so the pairs share their noise), the half-width of its 95% t interval (None for one
    seed) and the number of pairs."""
    diffs = [values[s] - ref[s] for s in values if s in ref and not math.isnan(values[s] - ref[s])]
    if not diffs:
        return float("nan"), None, 0
    mean = sum(diffs) / len(diffs)
    if len(diffs) == 1:
        return mean, None, 1
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    t = _T95[len(diffs) - 2] if len(diffs) - 1 <= len(_T95) else 2.0
    return mean, t * sd / math.sqrt(len(diffs)), len(diffs)


def verdict(change: float, half_width: float | None) -> str:
    """``better`` / ``worse`` when the 95% interval of a paired change excludes 0, else ``noise`` (one seed:
    ``-``, no verdict)."""
    if half_width is None or math.isnan(change):
        return "-"
    return "noise" if abs(change) <= half_width else ("better" if change > 0 else "worse")


def _per_seed(stat: dict | None, seeds: list[int]) -> dict[int, float]:
    values = (stat or {}).get("values") or []
    return dict(zip(seeds, values)) if len(values) == len(seeds) else {}


def changes(summary: dict) -> tuple[str | None, list[dict]]:
    """Per variant (and anchor): factor, trainable parameters, clean and robust r_mean statistics, the paired
    changes from the reference as (mean, 95% half-width or None, pairs) and the verdict on the robust change.
    Returns (the robust key, e.g. ``pgd@4/255``, the rows)."""
    entries = S.primary_results(summary)
    key = S.first_robust_key(summary)
    ref_label = next(label for label in entries if label.startswith("reference"))
    factor = {name: f for name, (f, _) in variants().items()}

    def parts(e: dict) -> tuple[dict, dict, dict[int, float], dict[int, float]]:
        c, r = S.clean_stat(e), S.robust_stat(e, key)
        return c, r, _per_seed(c, e.get("clean_seeds", [])), _per_seed(r, S.robust_seeds(e, key))

    _, _, ref_c, ref_r = parts(entries[ref_label])
    rows = []
    for label, e in entries.items():
        c, r, cs, rs = parts(e)
        dr = paired_change(rs, ref_r)
        rows.append({"label": label, "factor": factor.get(label, "anchor" if label != ref_label else "reference"),
                     "trainable": e.get("trainable"), "clean": c, "robust": r, "d_clean": paired_change(cs, ref_c),
                     "d_robust": dr, "verdict": "reference" if label == ref_label else verdict(dr[0], dr[1])})
    return key, rows


def ablation_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Variant, factor, trainable, clean and robust r_mean (mean ± sd over seeds), the paired change from the
    reference (± the half-width of its 95% interval with several seeds) and the verdict on the robust change."""
    key, rows = changes(summary)
    header = ["variant", "factor", "trainable", "clean r_mean", f"robust r_mean ({key})", "d clean", "d robust",
              "robust change"]
    n = len(summary.get("seeds", [])) or 1
    return header, [[r["label"], r["factor"], count(r["trainable"]), fmt(r["clean"], n), fmt(r["robust"], n),
                     _d(*r["d_clean"]), _d(*r["d_robust"]), r["verdict"]] for r in rows]


def plot_changes(summary: dict, root: Path) -> list[tuple[str, str]]:
    """The robust change of every variant from the reference, with its 95% interval, grouped by factor."""
    key, rows = changes(summary)
    items = [(r["factor"], r["label"], r["d_robust"][0], r["d_robust"][1], r["verdict"]) for r in rows
             if r["factor"] not in ("reference",) and not math.isnan(r["d_robust"][0])]
    if not items:
        return []
    n = len(summary.get("seeds", []))
    ref = next(r["label"] for r in rows if r["factor"] == "reference")
    spread = ref + "; " + (f"mean of {n} per-seed differences ± 95% t interval" if n > 1 else "one seed: no interval")
    paired_changes(items, root / "plots" / "ablation_changes.png",
                   xlabel=f"change of robust r_mean ({key}) from the reference, points", subtitle=spread)
    return [("plots/ablation_changes.png", "Each variant's change of robust r_mean from the reference (one factor "
             "changed), paired by seed, with its 95% interval: green better, red worse, grey within the noise.")]


def _d(change: float, half_width: float | None, n: int) -> str:
    if n == 0 or math.isnan(change):
        return "-"
    return f"{change:+.1f}" if half_width is None else f"{change:+.1f} ± {half_width:.1f}"


def findings(summary: dict) -> list[tuple[str, list[str]]]:
    """Per factor: the variant with the best robust r_mean, and whether each change is outside the noise."""
    header, table = ablation_rows(summary)
    lines = [" | ".join(header)] + [" | ".join(r) for r in table]
    _, rows = changes(summary)
    n = len(summary.get("seeds", [])) or 1
    ref = next(r for r in rows if r["factor"] == "reference")
    robust = lambda r: r["robust"].get("mean", float("nan"))  # noqa: E731
    out = []
    for f in FACTORS:
        cands = [ref] + [r for r in rows if r["factor"] == f]
        best = max(cands, key=lambda r: -math.inf if math.isnan(robust(r)) else robust(r))
        out.append(f"{f}: best robust r_mean with {best['label']} ({fmt(best['robust'], n)}); "
                   + ", ".join(f"{r['label']} {_d(*r['d_robust'])}"
                               + (f" ({r['verdict']})" if r["verdict"] != "-" else "")
                               for r in cands if r is not ref) + " (change vs reference)")
    if n == 1:
        out.append("One seed: read changes below about 1 point of r_mean as noise; `--seeds 0,1,2` gives each "
                   "change a 95% interval over paired seeds.")
    else:
        out.append(f"{n} seeds: each change is the mean of the per-seed differences from the reference (same "
                   "seed, same data order) ± the half-width of its 95% t interval; better / worse when the interval "
                   "excludes 0, else noise.")
    return [("Ablation: change from the reference, one factor at a time", lines), ("Which part helps", out)]


def run_ablation(out: str | Path, *, quick: bool = False, steps: int | None = None,
                 overrides: list[str] | None = None, tiny_test: bool = False,
                 report_only: bool = False, jobs: int = 1, progress: str = "auto") -> tuple[dict, str]:
    cfg = ablate_config(quick, steps, overrides, tiny_test=tiny_test)
    summary, _ = run_grid(cfg, out, title="advlora ablate: AdvLoRA's parts, one at a time", extra=findings,
                          extra_plots=plot_changes, report_only=report_only, jobs=jobs, progress=progress)
    header, rows = ablation_rows(summary)
    body = {r[0]: dict(zip(header[1:], r[1:])) for r in rows}
    table = metrics_table(body, columns=header[1:], first="variant")
    threat = S.first_threat(summary)
    seeds = summary.get("seeds", [])
    spread = (f"; {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± sd, changes paired by seed ± 95% "
              "interval" if len(seeds) > 1 else "; one seed")
    return summary, table + f"\n\nr_mean in %{spread}; threat model: {threat}"
