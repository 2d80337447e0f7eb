"""Batched k-means (k-means++ seeding, Lloyd iterations) on torch, for AdvLoRA's cluster initialisation.

Runs on the weights' device, over a batch of equally shaped matrices at once (the q/k/v/o layers of a tower
share a shape), with no scikit-learn. Seeded through a ``torch.Generator``. The objective (sum of squared
distances of the points to their centroid) is returned after every assignment step, so that callers and
tests can check that it never increases.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KMeansResult:
    """centroids (L, k, d), assign (L, n), objective (T, L): the objective after each assignment step."""

    centroids: torch.Tensor
    assign: torch.Tensor
    objective: torch.Tensor


def _sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (L, n, k) between points x (L, n, d) and centroids c (L, k, d)."""
    d = (x * x).sum(-1, keepdim=True) - 2 * x @ c.transpose(1, 2) + (c * c).sum(-1).unsqueeze(1)
    return d.clamp_min_(0)


def kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) of each batch element: (L, n, d) -> (L, k, d).

    ``generator`` is a CPU generator (sampling happens on the CPU so results do not depend on the device).
    """
    L, n, _ = x.shape
    rows = torch.arange(L, device=x.device)
    first = torch.randint(n, (L,), generator=generator).to(x.device)
    centroids = [x[rows, first]]
    d2 = ((x - centroids[0].unsqueeze(1)) ** 2).sum(-1)  # (L, n)
    for _ in range(1, k):
        w = d2.clamp_min(0)
        # all points already on a centroid (duplicates): fall back to uniform sampling
        w = torch.where(w.sum(-1, keepdim=True) > 0, w, torch.ones_like(w))
        idx = torch.multinomial(w.to(torch.float64).cpu(), 1, generator=generator).squeeze(-1).to(x.device)
        c = x[rows, idx]
        centroids.append(c)
        d2 = torch.minimum(d2, ((x - c.unsqueeze(1)) ** 2).sum(-1))
    return torch.stack(centroids, dim=1)


def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0, dtype: torch.dtype | None = None) -> KMeansResult:
    """Cluster the n points of each batch element of ``x`` (L, n, d) (or one matrix (n, d)) into ``k`` clusters.

    Lloyd's algorithm after k-means++ seeding; stops early when no assignment changes. An empty cluster keeps
    its previous centroid, which keeps the objective non-increasing. Computes in float64 on the CPU (exact
    monotonicity checks), in the input dtype (at least float32) elsewhere, unless ``dtype`` is given.
    """
    single = x.dim() == 2
    if single:
        x = x.unsqueeze(0)
    L, n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n, got k={k}, n={n}")
    if dtype is None:
        dtype = torch.float64 if x.device.type == "cpu" else torch.promote_types(x.dtype, torch.float32)
    x = x.to(dtype)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    c = kmeans_pp(x, k, gen)
    objective = []
    assign = None
    for it in range(iters + 1):
        best, new_assign = _sq_dist(x, c).min(-1)
        objective.append(best.sum(-1, dtype=torch.float64))
        converged = assign is not None and torch.equal(new_assign, assign)
        assign = new_assign
        if converged or it == iters:
            break
        onehot = torch.nn.functional.one_hot(assign, k).to(dtype)  # (L, n, k)
        counts = onehot.sum(1)  # (L, k)
        sums = onehot.transpose(1, 2) @ x  # (L, k, d)
        c = torch.where(counts.unsqueeze(-1) > 0, sums / counts.clamp_min(1).unsqueeze(-1), c)
    obj = torch.stack(objective)
    if single:
        return KMeansResult(c[0], assign[0], obj[:, 0])
    return KMeansResult(c, assign, obj)
