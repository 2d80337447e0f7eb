"""Is adversarial adaptation low-rank? Singular spectra and effective ranks of weight updates dW = W - W0.

- Entropy effective rank (Roy & Vetterli 2007): with p_i = s_i / sum_j s_j, erank = exp(-sum_i p_i log p_i);
  it is 1 for a rank-one matrix and min(out, in) for a matrix with equal singular values.
- Energy rank r_q: the smallest r with sum_{i<=r} s_i^2 >= q * sum_i s_i^2 (q = 0.9 by default), i.e. the
  rank of the best approximation (Eckart-Young) that keeps a share q of ||dW||_F^2.
- Stable rank ||dW||_F^2 / ||dW||_2^2.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def effective_rank(s: torch.Tensor) -> float:
    """Roy & Vetterli's entropy effective rank of singular values ``s`` (0 for an all-zero matrix)."""
    s = s.double().clamp_min(0)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def energy_rank(s: torch.Tensor, q: float = 0.9) -> int:
    """Smallest r whose top-r singular values hold a share ``q`` of the squared Frobenius norm."""
    e = s.double() ** 2
    total = e.sum()
    if total <= 0:
        return 0
    cum = torch.cumsum(e, 0) / total
    return int(torch.searchsorted(cum, torch.tensor(q, dtype=cum.dtype) - 1e-12).item()) + 1


def energy_at(s: torch.Tensor, r: int) -> float:
    """Share of ||dW||_F^2 kept by the best rank-r approximation."""
    e = s.double() ** 2
    return float(e[:r].sum() / e.sum()) if e.sum() > 0 else float("nan")


def layer_stats(w0: torch.Tensor, w: torch.Tensor, ranks: tuple[int, ...] = (1, 2, 4, 8, 16)) -> dict:
    """Spectrum and rank measures of dW = w - w0 for one layer."""
    dw = (w.double() - w0.double())
    s = torch.linalg.svdvals(dw)
    w0_norm = float(torch.linalg.matrix_norm(w0.double()))
    fro = float(s.pow(2).sum().sqrt())
    return {
        "shape": list(dw.shape),
        "full_rank": min(dw.shape),
        "rel_norm": fro / w0_norm if w0_norm > 0 else float("nan"),
        "effective_rank": effective_rank(s),
        "rank_90": energy_rank(s, 0.9),
        "rank_99": energy_rank(s, 0.99),
        "stable_rank": float(s.pow(2).sum() / s[0] ** 2) if s.numel() and s[0] > 0 else 0.0,
        "energy_at_rank": {str(r): energy_at(s, r) for r in ranks},
        "singular_values": s.tolist(),
    }


def update_spectra(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                   names: list[str] | None = None) -> dict[str, dict]:
    """``layer_stats`` for every 2-D weight present in both state dicts (or only ``names``) that changed."""
    out = {}
    for name in names if names is not None else list(base):
        if name not in tuned or name not in base or base[name].dim() != 2:
            continue
        if torch.equal(base[name], tuned[name]):
            continue
        out[name] = layer_stats(base[name], tuned[name])
    return out


def aggregate(stats: Mapping[str, dict]) -> dict:
    """Medians and means over layers, as the analysis report states them."""
    if not stats:
        return {}
    col = lambda k: torch.tensor([float(v[k]) for v in stats.values()])  # noqa: E731
    out = {"layers": len(stats)}
    for k in ("effective_rank", "rank_90", "rank_99", "stable_rank", "rel_norm", "full_rank"):
        t = col(k)
        out[k] = {"median": float(t.median()), "mean": float(t.mean()), "min": float(t.min()), "max": float(t.max())}
    ranks = next(iter(stats.values()))["energy_at_rank"]
    out["energy_at_rank_mean"] = {r: float(torch.tensor([v["energy_at_rank"][r] for v in stats.values()]).mean())
                                  for r in ranks}
    return out


def alpha_stats(steps: list[float], alphas: Mapping[str, list[float]]) -> dict:
    """Alpha over layers at the end of training, and its drift from the first logged step."""
    if not alphas:
        return {}
    final = torch.tensor([v[-1] for v in alphas.values()], dtype=torch.float64)
    first = torch.tensor([v[0] for v in alphas.values()], dtype=torch.float64)
    drift = final - first
    jumps = [max((abs(b - a) for a, b in zip(v, v[1:])), default=0.0) for v in alphas.values()]
    nan_free = all(not math.isnan(x) for v in alphas.values() for x in v)
    return {
        "layers": len(alphas), "steps_logged": len(steps),
        "final": {"mean": float(final.mean()), "std": float(final.std()) if len(final) > 1 else 0.0,
                  "min": float(final.min()), "max": float(final.max())},
        "first": {"mean": float(first.mean()), "min": float(first.min()), "max": float(first.max())},
        "drift": {"mean": float(drift.mean()), "mean_abs": float(drift.abs().mean()),
                  "max_abs": float(drift.abs().max())},
        "largest_step_change": max(jumps),
        "finite": nan_free,
        "per_layer_final": {k: v[-1] for k, v in alphas.items()},
    }
