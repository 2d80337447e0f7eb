"""``advlora analyze RUN_DIR``: the paper's low-rank claim made checkable, and alpha's stability.

For a trained run (a training run folder, a grid/demo cell, or a whole grid/demo folder: every trained cell):
- the singular spectrum of each updated linear layer's dW = W - W0 (adapters merged first), its entropy
  effective rank, the rank holding 90% / 99% of ||dW||_F^2 and the energy a rank-r LoRA could capture;
  for full fine-tuning this answers "is adversarial adaptation low-rank?"; for LoRA / AdvLoRA it confirms the
  update's rank is at most r (2r for AdvLoRA's residual mode, which also removes the initial B0 A0);
- for runs with trainable alpha (history.csv): alpha over layers at the end, drift from the start, the largest
  step-to-step change and whether it stayed finite.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from advlora.errors import AdvloraError
from advlora.experiments import backend
from advlora.experiments import spectrum as S
from advlora.experiments.report import alpha_columns, read_history
from advlora.experiments.spec import slug
from advlora.io import write_json
from advlora.report import plots
from advlora.report.report import Report, write_report

log = logging.getLogger(__name__)


def find_runs(path: Path) -> list[tuple[str, Path]]:
    """(label, training run folder) under ``path``: a run folder itself, a grid cell, or a grid folder."""
    path = Path(path)
    if not path.exists():
        raise AdvloraError(f"{path}: no such run folder")
    if (path / "config.yaml").is_file() and (path / "history.csv").is_file():
        return [(path.name, path)]
    if (path / "run").is_dir():
        return [(_label(path), path / "run")]
    runs = sorted(p.parent for p in path.glob("cells/*/*/seed*/run/history.csv"))
    if not runs:
        raise AdvloraError(f"{path}: neither a training run folder (config.yaml, history.csv) nor a grid/demo "
                           "folder with trained cells")
    return [(_label(p.parent), p) for p in runs]


def _label(cell: Path) -> str:
    return f"{cell.parent.name}/{cell.name}"


def analyze_run(run: Path, *, model_loader) -> dict[str, Any]:
    """Spectra of dW and alpha statistics of one training run; ``model_loader(run) -> (base, tuned)`` models."""
    out: dict[str, Any] = {"run": str(run)}
    base, tuned = model_loader(run)
    if tuned is not None:
        w0 = _linear_weights(base)
        w = _linear_weights(tuned)
        stats = S.update_spectra(w0, w)
        out["spectra"] = stats
        out["spectrum_summary"] = S.aggregate(stats)
    steps, cols = read_history(run / "history.csv")
    alphas = alpha_columns(cols)
    if alphas:
        out["alpha"] = S.alpha_stats(steps, alphas)
    return out


def _linear_weights(model) -> dict[str, Any]:
    """Weights of every nn.Linear of the wrapped model, under their original (peft-free) names."""
    import torch

    out = {}
    for name, mod in model.hf_model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lora_" not in name:
            clean = name.replace("base_model.model.", "").replace(".base_layer", "")
            out[clean] = mod.weight.detach().float().cpu()
    return out


def render(results: dict[str, dict], out: Path, source: Path) -> str:
    """Plots, report.md/html and analysis.json under ``out``; returns the terminal tables."""
    rep = Report(f"advlora analyze: {source}")
    rep.text("Spectra of dW = W - W0 per updated linear layer (adapters merged into W first). Effective rank: "
             "Roy & Vetterli (2007) entropy rank of the singular values; r90 / r99: the smallest rank holding 90% "
             "/ 99% of ||dW||_F^2; E@r: the share of ||dW||_F^2 the best rank-r matrix keeps.")
    text = []
    for i, (label, res) in enumerate(results.items()):
        rep.heading(label)
        if res.get("spectra"):
            header, rows = spectrum_rows(res)
            rep.table(header, rows)
            rep.text(spectrum_sentence(res["spectrum_summary"]))
            name = f"{i:02d}-{slug(label)}"
            plots.singular_spectra({k: v["singular_values"] for k, v in res["spectra"].items()},
                                   out / "plots" / f"{name}-spectra.png", title=f"Spectrum of dW: {label}")
            plots.effective_ranks({k: (v["effective_rank"], v["rank_90"], v["full_rank"])
                                   for k, v in res["spectra"].items()}, out / "plots" / f"{name}-ranks.png")
            rep.image(f"plots/{name}-spectra.png", f"Normalised singular values and cumulative energy: {label}")
            rep.image(f"plots/{name}-ranks.png", f"Effective rank and r90 per layer: {label}")
            text += [f"[{label}] " + spectrum_sentence(res["spectrum_summary"])]
        if res.get("alpha"):
            a = res["alpha"]
            lines = alpha_lines(a)
            rep.bullets(lines)
            text += [f"[{label}] alpha: " + "; ".join(lines)]
        if not res.get("spectra") and not res.get("alpha"):
            rep.text("No updated linear layer and no alpha in this run (zero-shot?).")

    write_json(out / "analysis.json", {k: _no_values(v) for k, v in results.items()})
    write_report(out, rep)
    return "\n".join(text)


def spectrum_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    header = ["layer", "shape", "|dW|/|W0|", "eff. rank", "r90", "r99", "stable rank", "E@8"]
    rows = [[name, "x".join(map(str, v["shape"])), f"{v['rel_norm']:.3f}", f"{v['effective_rank']:.1f}",
             str(v["rank_90"]), str(v["rank_99"]), f"{v['stable_rank']:.1f}",
             f"{100 * v['energy_at_rank'].get('8', float('nan')):.0f}%"] for name, v in res["spectra"].items()]
    return header, rows


def spectrum_sentence(agg: dict) -> str:
    if not agg:
        return "no updated layers"
    e = agg["energy_at_rank_mean"]
    return (f"{agg['layers']} layers, full rank {agg['full_rank']['median']:.0f} (median): effective rank median "
            f"{agg['effective_rank']['median']:.1f} (range {agg['effective_rank']['min']:.1f}-"
            f"{agg['effective_rank']['max']:.1f}), r90 median {agg['rank_90']['median']:.0f}; a rank-r update keeps "
            + ", ".join(f"{100 * v:.1f}% (r={r})" for r, v in e.items()) + " of ||dW||^2 on average")


def alpha_lines(a: dict) -> list[str]:
    f, d = a["final"], a["drift"]
    return [f"{a['layers']} layers, {a['steps_logged']} logged steps; final alpha mean {f['mean']:.4g}, std "
            f"{f['std']:.3g}, min {f['min']:.4g}, max {f['max']:.4g}",
            f"drift from the first step: mean {d['mean']:+.4f}, mean |drift| {d['mean_abs']:.4f}, max |drift| "
            f"{d['max_abs']:.4f}; largest step-to-step change {a['largest_step_change']:.4f}; "
            + ("finite throughout" if a["finite"] else "NOT finite (nan/inf seen)")]


def _no_values(res: dict) -> dict:
    """analysis.json keeps the first 64 singular values per layer (enough to redraw the plots' heads)."""
    out = dict(res)
    if "spectra" in out:
        out["spectra"] = {k: {**v, "singular_values": v["singular_values"][:64]} for k, v in out["spectra"].items()}
    return out


def analyze(path: str | Path, out: str | Path | None = None, *, model_loader=None) -> tuple[dict, str, Path]:
    """Analyse every training run found under ``path``; returns (results, terminal text, output folder)."""
    path = Path(path)
    runs = find_runs(path)
    out = Path(out) if out else path / "analysis"
    loader = model_loader or backend.base_and_tuned
    results = {label: analyze_run(run, model_loader=loader) for label, run in runs}
    return results, render(results, out, path), out
