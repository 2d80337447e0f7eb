"""The small base every attack shares: validation, projection onto the ball, clamping to [0, 1], random
starts, steepest-ascent steps, per-sample worst-case bookkeeping and the model-mode context.

All functions treat a batch as shape (B, ...): any trailing shape (images (B, 3, H, W), videos (B, F, 3, H, W)).
Norms are per sample, over all non-batch dimensions; a perturbation is never shared across the batch.
"""
from __future__ import annotations

import torch

from advlora.attacks.attack_objective import AttackObjective, as_objective
from advlora.attacks.seeding import is_per_sample
from advlora.attacks.threat import NORMS, parse_eps
from advlora.errors import AdvloraError, choices_error
from advlora.runtime import eval_mode as attack_mode  # noqa: F401 - the attacks' name for it

#: objective(images (B, ...)) -> per-sample loss (B,) to maximise, with the attributes ``AttackObjective``
#: declares (a plain function is declared with the defaults: ``as_objective``)
Objective = AttackObjective


def check_args(images: torch.Tensor, eps: float | str, norm: str, steps: int | None = None) -> float:
    """Validate the common arguments; returns eps as a float."""
    if norm not in NORMS:
        raise choices_error("norm", norm, NORMS)
    eps = parse_eps(eps)
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
        raise AdvloraError(f"steps must be an integer >= 1, got {steps!r}")
    if not torch.is_tensor(images) or images.dim() < 2:
        raise AdvloraError("images must be a tensor of shape (B, ...)")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise AdvloraError("images must be in pixel space [0, 1] (normalisation happens inside the model)")
    return eps


def flat_norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm (B,) over all non-batch dimensions."""
    f = t.reshape(t.shape[0], -1)
    return f.abs().amax(dim=1) if norm == "linf" else f.norm(dim=1)


def _bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project a perturbation onto the eps ball (per sample)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = flat_norm(delta, "l2")
    factor = torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))
    return delta * _bview(factor, delta)


def project_image(x: torch.Tensor, x0: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The point of the eps ball around ``x0`` intersected with [0, 1] reached from ``x``.

    Under linf this is exact (a box intersection); under l2 projecting to the ball then clamping to [0, 1] can
    only shrink the perturbation, so the result stays in both sets.
    """
    return (x0 + project(x - x0, eps, norm)).clamp(0.0, 1.0)


def _rand(shape, like: torch.Tensor, generator: torch.Generator | None, normal: bool = False) -> torch.Tensor:
    if is_per_sample(generator):   # advlora.attacks.seeding: row b from sample b's own stream
        return (generator.randn if normal else generator.rand)(shape, dtype=like.dtype).to(like.device)
    dev = generator.device if generator is not None else like.device
    fn = torch.randn if normal else torch.rand
    return fn(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


def random_start(x0: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """A uniform point of the linf ball, or a uniformly random direction and radius in the l2 ball, clamped."""
    if norm == "linf":
        delta = (2 * _rand(x0.shape, x0, generator) - 1) * eps
    else:
        d = _rand(x0.shape, x0, generator, normal=True)
        d = d / _bview(flat_norm(d, "l2").clamp_min(1e-12), d)
        r = _rand((x0.shape[0],), x0, generator)
        delta = d * _bview(r * eps, d)
    return (x0 + delta).clamp(0.0, 1.0)


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest ascent direction of unit norm: sign(grad) under linf, grad / ||grad||_2 under l2."""
    if norm == "linf":
        return grad.sign()
    return grad / _bview(flat_norm(grad, "l2").clamp_min(1e-12), grad)


def loss_and_grad(objective: Objective, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward and one backward: the per-sample loss (B,) and its gradient w.r.t. ``x`` only.

    ``torch.autograd.grad`` (never ``.backward()``): parameter ``.grad`` fields are left untouched, and the
    engine skips the weight-gradient kernels, so an attack inside a training step costs input gradients only.
    An objective with ``eot`` > 1 (a randomized model: expectation over transformation) is called that many
    times, one graph at a time; the loss and gradient returned are the means.
    """
    x = x.detach().requires_grad_(True)
    objective = as_objective(objective)
    n = int(objective.eot or 1)
    loss_sum, grad_sum = None, None
    for _ in range(n):
        with torch.enable_grad():
            loss = objective(x)
            check_loss(loss, x)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        grad_sum = grad.detach() if grad_sum is None else grad_sum + grad.detach()
    if n == 1:
        return loss_sum, grad_sum
    return loss_sum / n, grad_sum / n


def loss_only(objective: Objective, x: torch.Tensor) -> torch.Tensor:
    """The per-sample loss (B,) without a gradient (the mean over ``objective.eot`` calls, as
    ``loss_and_grad``): for an iterate whose gradient would never be used."""
    objective = as_objective(objective)
    n = int(objective.eot or 1)
    total = None
    with torch.no_grad():
        for _ in range(n):
            loss = objective(x.detach())
            check_loss(loss, x)
            total = loss.detach() if total is None else total + loss.detach()
    return total if n == 1 else total / n


def check_loss(loss: torch.Tensor, x: torch.Tensor) -> None:
    if not torch.is_tensor(loss) or loss.shape != (x.shape[0],):
        shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
        raise AdvloraError(f"objective must return one loss per sample, shape ({x.shape[0]},); got {shape}")


def outcome(objective: Objective) -> torch.Tensor | None:
    """The retrieval outcome of the objective's last call: per sample, the rank of its best positive in the
    objective's gallery (0 = retrieved first; ties count against the query), or None when the objective has no
    gallery (``objectives.RankedObjective`` keeps it, from the scores the loss was computed from). Where that
    is not the rank the metrics report (BLIP's two-stage rank), the evaluation makes the objective report the
    reported one (``stopping.report_rank``): what ``WorstCase`` keeps by and what an image is done by."""
    return as_objective(objective).last_rank


def reports_outcome(objective: Objective) -> bool:
    """Whether ``objective`` reports a retrieval outcome (``outcome``): then the clean image, a point of the
    ball, competes for the worst case even under a random start (``WorstCase.score_clean``: free when the
    objective carries its clean outcome, else one extra forward per attack call)."""
    return as_objective(objective).ranked


def start_point(objective: Objective, x0: torch.Tensor, eps: float, norm: str, random: bool,
                generator: torch.Generator | None) -> torch.Tensor:
    """Where an iterative attack starts: a random point of the ball, else the clean image, moved by
    0.001 * N(0, 1) (as TRADES starts) when the objective is stationary there (``objective.stationary``: e.g.
    the distance to the clean embedding, whose gradient at the clean image is zero)."""
    if random:
        return random_start(x0, eps, norm, generator)
    if as_objective(objective).stationary:
        return project_image(x0 + 0.001 * _rand(x0.shape, x0, generator, normal=True), x0, eps, norm)
    return x0.clone()


class WorstCase:
    """Per-sample worst point seen so far: with ``rank`` given, the worst retrieval outcome (highest rank of the
    best positive), ties broken by the higher objective; without, the highest objective. Restarts, iterates and
    the clean image all compete, so the point returned is never better than one the attack evaluated."""

    def __init__(self, x0: torch.Tensor) -> None:
        self.x = x0.detach().clone()
        self.loss = torch.full((x0.shape[0],), float("-inf"), device=x0.device)
        self.rank = torch.full((x0.shape[0],), -1, dtype=torch.long, device=x0.device)

    def update(self, loss: torch.Tensor, x: torch.Tensor, rank: torch.Tensor | None = None) -> torch.Tensor:
        """Keep ``x`` where it is worse than the worst so far; returns the mask of replaced samples."""
        loss = loss.detach().to(self.loss)
        loss = torch.where(torch.isnan(loss), torch.full_like(loss, float("-inf")), loss)
        if rank is None:
            better = loss > self.loss
        else:
            rank = rank.detach().to(self.rank)
            better = (rank > self.rank) | ((rank == self.rank) & (loss > self.loss))
            self.rank = torch.where(better, rank, self.rank)
        self.loss = torch.where(better, loss, self.loss)
        self.x = torch.where(_bview(better, x), x.detach(), self.x)
        return better

    def score_clean(self, objective: Objective, x0: torch.Tensor) -> torch.Tensor:
        """Let the clean image compete: its outcome from ``objective.clean_outcome`` ((loss, rank) at the clean
        images, computed from features already held) when the objective carries one, else one forward."""
        known = as_objective(objective).clean_outcome
        if known is not None and known[0].shape[0] == x0.shape[0]:
            loss, rank = known
            self.update(loss, x0, rank)
            return loss.detach()
        return self.score(objective, x0)

    def score(self, objective: Objective, x: torch.Tensor) -> torch.Tensor:
        """Evaluate ``objective`` at ``x`` without gradient and keep it if worse; returns the loss."""
        with torch.no_grad():
            loss = objective(x)
            check_loss(loss, x)
        self.update(loss, x, outcome(objective))
        return loss
