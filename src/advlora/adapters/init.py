"""Initial factors (A, B) of AdvLoRA from the frozen weights W0: cluster + alignment, PiSSA's SVD, or peft's.

For W0 (out x in) every initialisation returns A (r x in) and B (out x r), with the relative alignment error
||W0 - B A||_F / ||W0||_F. Cluster initialisation also returns the error of the one-hot k-means assignment,
which least-squares alignment can never exceed (the one-hot B is one of the candidates it minimises over).

Each initialisation ``AdapterConfig.init`` accepts is an ``Initialisation`` (its name, its function
``(weights, config) -> list[Factors]`` and what methods need to know of its factors), declared once by
``@initialisation(name, ...)`` on its function into ``DECLARED`` (the shared ``Declarations``: ``get``,
``names``, ``registered`` for a throw-away one); ``INITIALISATIONS`` is its live name -> Initialisation view
(docs/contracts.md: "Adding an adapter initialisation").
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from advlora.adapters.kmeans import kmeans
from advlora.declarations import Declarations

#: at most this many elements of weights per k-means batch (64 MB in float64)
_BATCH_ELEMENTS = 8_000_000


@dataclass
class Factors:
    """A (r, in), B (out, r) in float32 on the weight's device; relative alignment errors."""

    A: torch.Tensor
    B: torch.Tensor
    error: float
    onehot_error: float | None = None
    kmeans_objective: list[float] | None = None


#: ``(weights, config) -> list[Factors]``: one per weight, same order
FactorsFn = Callable[[list[torch.Tensor], Any], list[Factors]]


@dataclass(frozen=True)
class Initialisation:
    """One initialisation ``AdapterConfig.init`` names; calling it returns the factors.

    Attributes:
        name: the name (``AdapterConfig(init=name)``, ``advlora adapter --init``).
        factors: ``(weights, config) -> list[Factors]``.
        doc: one line on what it does (its function's docstring).
        zero_update: B = 0, so B A = 0 at the start: with alpha 0 as well no gradient reaches any parameter.
        peft_own: the factors peft's own ``init_lora_weights=True`` draws: a method on peft's layers leaves the
            initialisation to peft.
    """

    name: str
    factors: FactorsFn
    doc: str = ""
    zero_update: bool = False
    peft_own: bool = False

    def __call__(self, weights: list[torch.Tensor], cfg: Any) -> list[Factors]:
        return self.factors(weights, cfg)


#: every declared initialisation (``Declarations``): ``register``, ``registered`` (a throw-away one for a
#: ``with`` block), ``get`` (an unknown name: one error line listing the declared ones), ``names``, ``unregister``
DECLARED: Declarations[Initialisation] = Declarations("adapter init")
register, unregister, registered, get, names = (DECLARED.register, DECLARED.unregister, DECLARED.registered,
                                                DECLARED.get, DECLARED.names)
#: ``AdapterConfig.init`` name -> ``Initialisation``, read live
INITIALISATIONS: Mapping[str, Initialisation] = DECLARED.view


def initialisation(name: str, **declared: Any) -> Callable[[FactorsFn], FactorsFn]:
    """Declare ``fn(weights, config) -> list[Factors]`` as the initialisation ``name`` (``declared``: the other
    fields of its ``Initialisation``; ``doc`` defaults to the first line of its docstring)."""
    def declare(fn: FactorsFn) -> FactorsFn:
        register(Initialisation(name, fn, **{"doc": (fn.__doc__ or "").strip().split("\n")[0], **declared}))
        return fn
    return declare


def relative_error(W: torch.Tensor, B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """||W - B A||_F / ||W||_F (batched over a leading dimension)."""
    return torch.linalg.matrix_norm(W - B @ A) / torch.linalg.matrix_norm(W).clamp_min(1e-30)


def cluster_factors(weights: list[torch.Tensor], rank: int, *, iters: int = 20, seed: int = 0, on: str = "rows",
                    align: str = "lstsq") -> list[Factors]:
    """k-means (k = rank) over the rows (or columns) of each W0, then alignment; batched over equal shapes.

    rows: the centroids of the rows of W0 are A; B = argmin ||W0 - B A||_F = W0 pinv(A) (``align="lstsq"``)
    or the one-hot assignment of each row (``align="onehot"``).
    cols: the roles transpose: the centroids of the columns of W0 are B; A = pinv(B) W0 or the one-hot assignment.
    """
    out: list[Factors | None] = [None] * len(weights)
    groups: dict[tuple, list[int]] = {}
    for i, w in enumerate(weights):
        groups.setdefault((tuple(w.shape), w.device), []).append(i)
    for (shape, _), idx in groups.items():
        chunk = max(1, _BATCH_ELEMENTS // (shape[0] * shape[1]))
        for s in range(0, len(idx), chunk):
            part = idx[s:s + chunk]
            W = torch.stack([weights[i].detach() for i in part])
            for i, f in zip(part, _cluster_batch(W, rank, iters, seed, on, align)):
                out[i] = f
    return out  # type: ignore[return-value]


def _cluster_batch(W: torch.Tensor, rank: int, iters: int, seed: int, on: str, align: str) -> list[Factors]:
    # k-means in float32 (its distances need no more, and float64 matmuls cost 2-4x on CPU: P4 of advlora
    # bench); the alignment solve and the errors in float64 on CPU, where it is cheap next to the clustering
    dtype = torch.float64 if W.device.type == "cpu" else torch.float32
    points = W.float() if on == "rows" else W.float().transpose(1, 2)  # (L, n, d)
    res = kmeans(points, rank, iters=iters, seed=seed, dtype=torch.float32)
    W = W.to(dtype)
    res.centroids = res.centroids.to(dtype)
    onehot = torch.nn.functional.one_hot(res.assign, rank).to(dtype)  # (L, n, r)
    if on == "rows":
        A = res.centroids  # (L, r, in)
        B_onehot = onehot  # (L, out, r)
        B = W @ torch.linalg.pinv(A) if align == "lstsq" else B_onehot
        onehot_err = relative_error(W, B_onehot, A)
    else:
        B = res.centroids.transpose(1, 2)  # (L, out, r)
        A_onehot = onehot.transpose(1, 2)  # (L, r, in)
        A = torch.linalg.pinv(B) @ W if align == "lstsq" else A_onehot
        onehot_err = relative_error(W, B, A_onehot)
    err = relative_error(W, B, A)
    return [Factors(A[j].float().contiguous(), B[j].float().contiguous(), float(err[j]), float(onehot_err[j]),
                    res.objective[:, j].tolist()) for j in range(W.shape[0])]


def svd_factors(W: torch.Tensor, rank: int) -> Factors:
    """PiSSA's principal factors: B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T (the best rank-r approximation)."""
    Wf = W.detach().float()
    U, S, Vh = torch.linalg.svd(Wf, full_matrices=False)
    root = S[:rank].sqrt()
    B = (U[:, :rank] * root).contiguous()
    A = (root.unsqueeze(1) * Vh[:rank]).contiguous()
    return Factors(A, B, float(relative_error(Wf, B, A)))


def peft_factors(W: torch.Tensor, rank: int, generator: torch.Generator) -> Factors:
    """peft's default: A as nn.Linear's kaiming-uniform init, B = 0 (so B A = 0 and the error is 1)."""
    out_f, in_f = W.shape
    A = torch.empty(rank, in_f)
    torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)
    return Factors(A.to(W.device), torch.zeros(out_f, rank, device=W.device), 1.0)


# ---- the initialisations ``AdapterConfig.init`` names --------------------------------------------------------
@initialisation("cluster")
def _cluster(weights: list[torch.Tensor], cfg: Any) -> list[Factors]:
    """k-means over the rows (or columns) of W0, then least-squares or one-hot alignment."""
    return cluster_factors(weights, cfg.rank, iters=cfg.kmeans_iters, seed=cfg.seed, on=cfg.kmeans_on,
                           align=cfg.align_init)


@initialisation("pissa")
def _pissa(weights: list[torch.Tensor], cfg: Any) -> list[Factors]:
    """PiSSA's top-r SVD of each W0."""
    return [svd_factors(w, cfg.rank) for w in weights]


@initialisation("peft", zero_update=True, peft_own=True)
def _peft(weights: list[torch.Tensor], cfg: Any) -> list[Factors]:
    """peft's default (A kaiming-uniform, B = 0), one generator seeded by ``cfg.seed`` across the layers."""
    gen = torch.Generator().manual_seed(cfg.seed)
    return [peft_factors(w, cfg.rank, gen) for w in weights]
