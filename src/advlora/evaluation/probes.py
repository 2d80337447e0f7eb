"""The sanity checks' view of an evaluation (``sanity.Probe``): a deterministic subset of its images, a batch
with the objective in use, and re-running an image attack there under another threat model; and the check
that a model is deterministic (AutoAttack's check for randomized defenses).
"""
from __future__ import annotations

import torch

from advlora.attacks import ThreatModel
from advlora.data.dataset import RetrievalDataset
from advlora.evaluation.measure import context, measure
from advlora.evaluation.results import limit_indices
from advlora.evaluation.runners import attack_images, objective_for
from advlora.evaluation.sanity import Check, Probe
from advlora.evaluation.tasks import task_of


def probe(model, dataset: RetrievalDataset, k, objective: str, gallery: str, batch_size: int,
          limit: int | None, runs: dict[str, tuple]) -> Probe:
    """The sanity checks' view of a deterministic subset of ``limit`` images: a batch with the objective in
    use, and re-running an image attack of ``runs`` there (its objective and options) under another threat
    model (a fresh generator from its seed)."""
    idx = limit_indices(len(dataset), limit)
    small = dataset if idx is None else dataset.subset(idx)
    ctx = context(model, small, k)
    sel = torch.arange(min(len(small), batch_size))
    x = ctx.images.rows(sel).to(model.device)
    grad_objective = objective_for(objective, ctx, sel, x, gallery)   # the objective in use
    if getattr(grad_objective, "stationary", False):                  # tested where the attacks start
        x = (x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(x)).clamp(0, 1)

    def rerun(key: str, threat: ThreatModel) -> dict:
        spec, _, obj, opts = runs[key]
        adv = attack_images(ctx, spec, threat, batch_size=batch_size, gallery=gallery, objective=obj,
                            generator=threat.generator(), options=opts)
        return measure(ctx, adv)["metrics"]

    return Probe(len(small), small.txt2img, x, grad_objective, rerun,
                 {key: (spec.name, th) for key, (spec, th, _, _) in runs.items()}, chance=task_of(small).chance(small))


def is_randomized(model, images: torch.Tensor, tol: float = 1e-7) -> float:
    """The largest difference between two calls of ``model.encode_image`` on the same ``images`` (0 for a
    deterministic model): AutoAttack's check for randomized defenses."""
    with torch.no_grad():
        a = model.encode_image(images)
        b = model.encode_image(images)
    return float((a - b).abs().max()) if a.numel() else 0.0


def check_randomized(diff: float, eot: int, tol: float = 1e-7) -> Check:
    """PASS for a deterministic model; WARN (and the suite then runs with EOT) for a randomized one."""
    if diff <= tol:
        return Check("PASS", f"model deterministic: two calls on one input agree (max |diff| {diff:.2g})")
    return Check("WARN", f"randomized model: two calls on one input differ (max |diff| {diff:.3g}); the suite runs "
                 f"as AutoAttack's rand version (APGD with EOT over {eot} samples per step)",
                 "a randomized defense: report the EOT numbers, and more EOT samples if they still change")


__all__ = ["check_randomized", "is_randomized", "probe"]
