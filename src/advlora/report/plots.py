"""PNG plots of experiment results (matplotlib, Agg backend): every function takes plain numbers and a path.

- ``robust_vs_eps``: robust ``r_mean`` against the attack budget, one line per method (eps 0 = clean).
- ``clean_vs_robust``: clean against robust ``r_mean``, marker area by trainable parameters.
- ``alpha_trajectories``: AdvLoRA's alpha per adapted layer over training steps, one panel per run.
- ``training_curves``: training loss (smoothed, raw underneath) and learning rate over steps.
- ``singular_spectra`` / ``effective_ranks``: the spectrum of each weight update dW and its effective rank.
- ``paired_changes``: an ablation's changes from its reference with their intervals, grouped by factor.
"""
from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
# the font cache build logs at INFO that it skips the bitmap emoji font: noise for our users, not a problem
logging.getLogger("matplotlib.font_manager").setLevel(logging.WARNING)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from advlora.io import atomic_write_bytes  # noqa: E402

#: colours of the usual methods, so that a method has the same colour in every plot of a report
METHOD_COLORS = {"frozen": "#7f7f7f", "zero-shot": "#7f7f7f", "clean full FT": "#ff7f0e", "adv. full FT": "#d62728",
                 "adv. LoRA": "#1f77b4", "AdvLoRA": "#2ca02c", "adv. PiSSA": "#9467bd"}
#: methods without training, drawn dashed so that they stay visible when a trained method coincides with them
_REFERENCES = ("frozen", "zero-shot")
_CYCLE = ["#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
          "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]


def colors_for(labels: Sequence[str]) -> dict[str, str]:
    """A colour per label: the fixed colour of a known method, else the next colour of the cycle."""
    out, free = {}, [c for c in _CYCLE if c not in METHOD_COLORS.values()] + _CYCLE
    for label in labels:
        out[label] = METHOD_COLORS.get(label) or free[len([k for k in out if k not in METHOD_COLORS]) % len(free)]
    return out


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _eps_label(eps: float) -> str:
    k = eps * 255
    return f"{k:.0f}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.3g}"


def robust_vs_eps(series: Mapping[str, Sequence[tuple[float, float, float]]], path: str | Path, *,
                  attack: str = "PGD-10", subtitle: str = "") -> Path:
    """Robust r_mean against eps, one line per method.

    Args:
        series: method -> [(eps, r_mean, spread)] with eps in [0, 1] pixel units (eps 0 is the clean score);
            spread is drawn as an error bar when > 0 (mean +- spread over seeds).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = colors_for(list(series))
    all_eps = sorted({e for pts in series.values() for e, _, _ in pts})
    for label, pts in series.items():
        pts = sorted(pts)
        xs = [e * 255 for e, _, _ in pts]
        ys = [y for _, y, _ in pts]
        errs = [s for _, _, s in pts]
        # the untrained reference is dashed and on top: a method that learned nothing lies exactly under it
        ref = label in _REFERENCES
        ax.errorbar(xs, ys, yerr=errs if any(e > 0 for e in errs) else None, marker="o", ms=4, lw=1.8, capsize=3,
                    color=colors[label], label=label, ls="--" if ref else "-", zorder=3 if ref else 2)
    ax.set_xticks([e * 255 for e in all_eps])
    ax.set_xticklabels(["clean" if e == 0 else _eps_label(e) for e in all_eps])
    ax.set_ylim(bottom=0)
    _style(ax, f"Robust retrieval vs attack budget ({attack})", "eps (L-inf, pixel space [0, 1])", "r_mean (%)")
    if subtitle:
        ax.text(0.0, -0.2, subtitle, transform=ax.transAxes, fontsize=7.5, color="#555555", va="top", wrap=True)
    ax.legend(frameon=False, fontsize=8.5)
    return _save(fig, path)


def clean_vs_robust(points: Mapping[str, tuple[float, float, int]], path: str | Path, *,
                    attack: str = "PGD-10", subtitle: str = "") -> Path:
    """Clean r_mean (x) against robust r_mean (y); marker area grows with log10(trainable parameters).

    Args:
        points: method -> (clean r_mean, robust r_mean, trainable parameters).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    colors = colors_for(list(points))
    counts = [max(1, p[2]) for p in points.values()]
    lo, hi = math.log10(min(counts)), math.log10(max(counts))
    xs = [p[0] for p in points.values()]
    ys = [p[1] for p in points.values()]
    offsets = _label_offsets(xs, ys)
    for (label, (clean, robust, n)), off in zip(points.items(), offsets):
        frac = 0.5 if hi == lo else (math.log10(max(1, n)) - lo) / (hi - lo)
        size = 40 + 560 * frac
        ax.scatter([clean], [robust], s=size, color=colors[label], alpha=0.75, edgecolors="black", linewidths=0.6,
                   zorder=3, label=f"{label} ({count(n)} params)")
        if len(points) <= 6:  # beyond that, labels collide: a legend names the points instead
            ax.annotate(f"{label}\n{count(n)} params", (clean, robust), xytext=off, textcoords="offset points",
                        fontsize=8)
    if len(points) > 6:
        leg = ax.legend(frameon=False, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), markerscale=0.4)
        for h in leg.legend_handles:
            h.set_sizes([40])
    pad_x = max(2.0, 0.15 * (max(xs) - min(xs)))
    pad_y = max(2.0, 0.15 * (max(ys) - min(ys)))
    ax.set_xlim(min(xs) - pad_x, max(xs) + (3 if len(points) <= 6 else 1) * pad_x)
    ax.set_ylim(max(0, min(ys) - pad_y), max(ys) + 2 * pad_y)
    _style(ax, f"Clean vs robust ({attack}); marker size = trainable parameters (log)", "clean r_mean (%)",
           "robust r_mean (%)")
    if subtitle:
        ax.text(0.0, -0.15, subtitle, transform=ax.transAxes, fontsize=7.5, color="#555555", va="top")
    return _save(fig, path)


#: colour of an ablation change by its verdict (``advlora.experiments.ablate.verdict``)
VERDICT_COLORS = {"better": "#2ca02c", "worse": "#d62728", "noise": "#7f7f7f", "-": "#1f77b4"}


def paired_changes(items: Sequence[tuple[str, str, float, float | None, str]], path: str | Path, *,
                   xlabel: str, subtitle: str = "") -> Path:
    """Changes from a reference as points with horizontal 95% intervals, one row per variant, grouped.

    Args:
        items: (group, label, change, interval half-width or None, verdict) in display order, top to bottom;
            the verdict (better / worse / noise / -) picks the colour.
    """
    groups: list[str] = []
    for g, *_ in items:
        if g not in groups:
            groups.append(g)
    rows: list[tuple[str, str, float, float | None, str]] = []
    for g in groups:
        rows += [it for it in items if it[0] == g]
    fig, ax = plt.subplots(figsize=(6.8, 0.32 * len(rows) + 1.4))
    ys = list(range(len(rows)))[::-1]
    for y, (_, _label, change, half, verdict) in zip(ys, rows):
        color = VERDICT_COLORS.get(verdict, "#1f77b4")
        ax.errorbar([change], [y], xerr=None if half is None else [[half], [half]], fmt="o", ms=5, color=color,
                    capsize=3, lw=1.6, zorder=3)
    ax.axvline(0.0, color="black", lw=0.8, zorder=2)
    ax.set_yticks(ys)
    ax.set_yticklabels([label for _, label, *_ in rows], fontsize=8.5)
    # a thin line and the factor's name between groups
    start = 0
    for g in groups:
        n = sum(1 for it in rows if it[0] == g)
        top = ys[start]
        ax.text(1.01, top, g, transform=ax.get_yaxis_transform(), fontsize=8, color="#555555", va="center")
        if start:
            ax.axhline(top + 0.5, color="#cccccc", lw=0.6)
        start += n
    _style(ax, "Ablation: change from the reference", xlabel, "")
    ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
    ax.grid(False, axis="y")
    if subtitle:
        ax.text(0.0, -0.6 / max(1, len(rows)) - 0.12, subtitle, transform=ax.transAxes, fontsize=7.5,
                color="#555555", va="top")
    return _save(fig, path)


def _label_offsets(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[int, int]]:
    """Label offsets (points) that move a label below its marker when it would sit on a neighbour's label."""
    span_x = (max(xs) - min(xs)) or 1.0
    span_y = (max(ys) - min(ys)) or 1.0
    out = [(9, 6)] * len(xs)
    order = sorted(range(len(xs)), key=lambda i: -ys[i])
    for a, b in zip(order, order[1:]):
        close = abs(ys[a] - ys[b]) < 0.12 * span_y and abs(xs[a] - xs[b]) < 0.5 * span_x
        if close and out[a] == (9, 6):
            out[b] = (9, -24)
    return out


def count(n: int | None) -> str:
    """A parameter count as people write it: ``1.48M``, ``24.6k``, ``0``."""
    if n is None:
        return "-"
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def alpha_trajectories(runs: Mapping[str, tuple[Sequence[float], Mapping[str, Sequence[float]]]],
                       path: str | Path) -> Path:
    """AdvLoRA's alpha per adapted layer over training, one panel per run.

    Args:
        runs: label -> (steps, {layer name: alpha per step}). Lines are coloured by depth within each tower
            (vision: blues, text: oranges) so the eye can follow depth; the tower mean is drawn thick.
    """
    n = max(1, len(runs))
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.8 * rows), squeeze=False)
    for ax, (label, (steps, layers)) in zip(axes.flat, runs.items()):
        by_tower: dict[str, list[str]] = {}
        for name in layers:
            by_tower.setdefault(_tower(name), []).append(name)
        cmaps = {"vision": plt.cm.Blues, "text": plt.cm.Oranges}
        for tower, names in by_tower.items():
            cmap = cmaps.get(tower, plt.cm.Greens)
            for i, name in enumerate(names):
                ax.plot(steps, layers[name], color=cmap(0.35 + 0.6 * i / max(1, len(names) - 1)), lw=0.9,
                        alpha=0.8)
            mean = np.mean([np.asarray(layers[nm], dtype=float) for nm in names], axis=0)
            ax.plot(steps, mean, color=cmap(1.0), lw=2.6, label=f"{tower} mean ({len(names)} layers)")
        short = label if len(label) <= 48 else label[:46] + "..."
        _style(ax, f"alpha per layer: {short}", "training step", "alpha")
        ax.legend(frameon=False, fontsize=8)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    if not runs:
        axes.flat[0].text(0.5, 0.5, "no run with trainable alpha", ha="center", va="center")
    fig.tight_layout()
    return _save(fig, path)


def _tower(layer: str) -> str:
    if "vision" in layer or "visual" in layer:
        return "vision"
    if "text" in layer:
        return "text"
    return "other"


def training_curves(runs: Mapping[str, tuple[Sequence[float], Mapping[str, Sequence[float]]]],
                    path: str | Path) -> Path:
    """Training loss (moving average; raw values faint) and learning rate per run.

    Args:
        runs: label -> (steps, {"loss": [...], "lr": [...]}).
    """
    fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(11, 3.9), gridspec_kw={"width_ratios": [2, 1]})
    colors = colors_for(list(runs))
    for label, (steps, cols) in runs.items():
        loss = np.asarray(cols.get("loss", []), dtype=float)
        if loss.size:
            ax_l.plot(steps, loss, color=colors[label], lw=0.6, alpha=0.25)
            ax_l.plot(steps, _smooth(loss), color=colors[label], lw=1.8, label=label)
        if "lr" in cols:
            ax_r.plot(steps, cols["lr"], color=colors[label], lw=1.5, label=label)
    _style(ax_l, "Training loss (moving average; raw faint)", "training step", "loss")
    _style(ax_r, "Learning rate", "training step", "lr")
    ax_r.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if len(runs) <= 6:
        ax_l.legend(frameon=False, fontsize=8)
    else:  # many runs: the legend goes under the plots instead of over the curves
        ax_l.legend(frameon=False, fontsize=7.5, loc="upper left", bbox_to_anchor=(0.0, -0.16), ncols=3)
    fig.tight_layout()
    return _save(fig, path)


def _smooth(y: np.ndarray, frac: float = 0.08) -> np.ndarray:
    w = max(1, int(len(y) * frac))
    if w <= 1:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    out = np.empty_like(y)
    for i in range(len(y)):
        lo = max(0, i - w + 1)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def singular_spectra(spectra: Mapping[str, Sequence[float]], path: str | Path, *, title: str = "") -> Path:
    """Normalised singular values s_i / s_1 of each dW (log scale) and the cumulative energy, one line per layer."""
    fig, (ax_s, ax_e) = plt.subplots(1, 2, figsize=(11, 4.0))
    names = list(spectra)
    by_tower: dict[str, list[str]] = {}
    for name in names:
        by_tower.setdefault(_tower(name), []).append(name)
    cmaps = {"vision": plt.cm.Blues, "text": plt.cm.Oranges}
    for tower, layer_names in by_tower.items():
        cmap = cmaps.get(tower, plt.cm.Greens)
        for i, name in enumerate(layer_names):
            s = np.asarray(spectra[name], dtype=float)
            if s.size == 0 or s[0] <= 0:
                continue
            c = cmap(0.35 + 0.6 * i / max(1, len(layer_names) - 1))
            idx = np.arange(1, s.size + 1)
            lab = f"{tower} ({len(layer_names)} layers)" if i == len(layer_names) - 1 else None
            ax_s.semilogy(idx, s / s[0], color=c, lw=0.9, label=lab)
            energy = np.cumsum(s ** 2) / np.sum(s ** 2)
            ax_e.plot(idx, energy, color=c, lw=0.9, label=lab)
    ax_e.set_xscale("log")
    ax_e.axhline(0.9, color="black", lw=0.8, ls="--")
    ax_e.text(ax_e.get_xlim()[1], 0.9, " 90%", va="center", fontsize=8)
    _style(ax_s, title or "Singular spectrum of dW = W - W0 (normalised)", "index i", "s_i / s_1")
    _style(ax_e, "Share of ||dW||_F^2 kept by the best rank-r matrix", "rank r (log scale)", "energy share")
    ax_s.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def effective_ranks(ranks: Mapping[str, tuple[float, int, int]], path: str | Path) -> Path:
    """Per layer: entropy effective rank and the rank holding 90% of the energy, against the full rank."""
    names = list(ranks)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.34 * len(names) + 2), 4.4))
    x = np.arange(len(names))
    eff = [ranks[n][0] for n in names]
    r90 = [ranks[n][1] for n in names]
    full = [ranks[n][2] for n in names]
    ax.bar(x - 0.2, eff, width=0.4, color="#1f77b4", label="effective rank (Roy & Vetterli 2007)")
    ax.bar(x + 0.2, r90, width=0.4, color="#ff7f0e", label="rank holding 90% of ||dW||^2")
    ax.set_xticks(x)
    ax.set_xticklabels([_short(n) for n in names], rotation=75, fontsize=7)
    top = max([*eff, *r90, 1])
    ax.set_ylim(0, top * 1.25)
    _style(ax, f"Effective rank of each weight update dW (full rank: {_range(full)})", "", "rank")
    ax.legend(frameon=False, fontsize=8, loc="upper left", ncols=2)
    fig.tight_layout()
    return _save(fig, path)


def _range(values: Sequence[int]) -> str:
    lo, hi = min(values, default=0), max(values, default=0)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _short(name: str) -> str:
    parts = name.replace("hf_model.", "").split(".")
    keep = [p for p in parts if p not in ("encoder", "layers", "layer", "self_attn", "attention", "self", "model")]
    return ".".join(keep[-4:])
