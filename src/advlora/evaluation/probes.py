"""The sanity checks' view of an evaluation (``sanity.Probe``): a deterministic subset of its images, a batch
with the objective in use, every objective attacked at its attack's start points, the scores the batch gets,
and re-running an image attack there under another threat model (or another attack on the same objective);
and the check that a model is deterministic (AutoAttack's check for randomized defenses).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from advlora.attacks import ThreatModel, registry
from advlora.attacks._utils import start_point
from advlora.attacks.attack_objective import TargetFamily, as_objective
from advlora.data.dataset import RetrievalDataset
from advlora.evaluation.distributed import labelled
from advlora.evaluation.measure import context, measure, positives
from advlora.evaluation.plan import EvalPlan
from advlora.evaluation.results import limit_indices
from advlora.evaluation.runners import attack_images, objective_for
from advlora.evaluation.sanity import Check, Probe
from advlora.evaluation.tasks import task_of

#: AutoAttack's randomness probe (``checks.check_randomized``): calls on one input, and the largest l2
#: difference between two calls' outputs, each scaled to unit l2 norm, that still counts as deterministic
RANDOM_CALLS, RANDOM_TOL = 5, 1e-4


def probe(model, dataset: RetrievalDataset, k, plan: EvalPlan, runs: dict[str, tuple]) -> Probe:
    """The sanity checks' view of a deterministic subset of ``plan.sanity_limit`` images: a batch with the
    objective in use, and re-running an image attack of ``runs`` there (its objective and options) under another
    threat model (a fresh generator from its seed)."""
    objective, gallery, batch_size = plan.objective, plan.gallery, plan.batch_size
    idx = limit_indices(len(dataset), plan.sanity_limit)
    small = dataset if idx is None else dataset.subset(idx)
    ctx = context(model, small, k, plan.logit_scale)
    sel = torch.arange(min(len(small), batch_size))
    x = x0 = ctx.images.rows(sel).to(model.device)
    grad_objective = objective_for(objective, ctx, sel, x, gallery)   # the objective in use
    if as_objective(grad_objective).stationary:                  # tested where the attacks start
        x = (x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(x)).clamp(0, 1)

    def rerun(key: str, threat: ThreatModel, attack: str | None = None, ranks: bool = False):
        spec, _, obj, opts = runs[key]
        spec = spec if attack is None else registry.get(attack)
        with labelled(f"sanity check on {len(small)} images: {threat.line(spec.name)}"):
            adv = attack_images(ctx, spec, threat, plan, generator=threat.generator(), objective=obj,
                                options=opts).images
        res = measure(ctx, adv)
        return (res["metrics"], res["ranks"][0].cpu()) if ranks else res["metrics"]

    with torch.no_grad():
        scores = model.logit_scale * model.encode_image(x0) @ ctx.text_features.t()
    return Probe(len(small), small.txt2img, x, grad_objective, rerun,
                 {key: (spec.name, th) for key, (spec, th, _, _) in runs.items()}, chance=task_of(small).chance(small),
                 starts=starts(ctx, runs, sel, x0, gallery), scores=scores,
                 positives=positives(small, sel).to(scores.device))


def starts(ctx, runs: dict[str, tuple], sel: torch.Tensor, x: torch.Tensor, gallery: str) -> dict:
    """Per gradient-based attack of ``runs``: its objective on the batch ``x`` (rows ``sel`` of ``ctx``'s set) and
    the points its iterations start from (a random point of the ball under a random start, else the clean
    image; ``_utils.start_point``, drawn from the run's seed), for the zero-gradient check. A targeted family
    (APGD-T) is every target at once: its images repeated target-major, as the attack runs them."""
    out = {}
    for key, (spec, th, obj, opts) in runs.items():
        if spec.kind != "white-box":
            continue
        o = objective_for(spec.objective or obj, ctx, sel, x, gallery, n_targets=opts.get("targets", 9))
        xs = x
        if isinstance(o, TargetFamily):
            n = o.n_targets
            if not n:
                continue
            o, xs = o.targets_of(range(n)), x.repeat(n, *([1] * (x.dim() - 1)))
        random = "random_start" in spec.uses and th.random_start
        out[key] = (o, start_point(o, xs, float(th.eps), th.norm, random, th.generator(str(x.device))))
    return out


@dataclass(frozen=True)
class Randomness:
    """What the randomness probe measured: the largest relative difference between two calls' image features
    (``diff``), the images whose top-scoring caption changed between calls (``flips``), over ``calls`` calls on
    ``n_images`` images."""

    diff: float
    flips: int = 0
    calls: int = RANDOM_CALLS
    n_images: int = 0

    @property
    def randomized(self) -> bool:
        return self.diff > RANDOM_TOL or self.flips > 0


def is_randomized(model, images: torch.Tensor, text_features: torch.Tensor | None = None,
                  calls: int = RANDOM_CALLS) -> Randomness:
    """AutoAttack's check for randomized defenses: ``calls`` calls of ``model.encode_image`` on ``images``; each
    output scaled to unit l2 norm, the largest l2 difference between any two calls, and (with
    ``text_features``) the images whose top-scoring caption differs between calls (AutoAttack: the count of
    correct predictions)."""
    outs, tops = [], []
    with torch.no_grad():
        for _ in range(calls):
            f = model.encode_image(images).float().reshape(len(images), -1)
            outs.append(f / (f.norm(dim=1, keepdim=True) + 1e-10))
            if text_features is not None:
                tops.append((f @ text_features.float().t().to(f.device)).argmax(dim=1))
    if not len(images):
        return Randomness(0.0, 0, calls, 0)
    diff = max((float((a - b).norm(dim=1).max()) for i, a in enumerate(outs) for b in outs[i + 1:]), default=0.0)
    flips = int((torch.stack(tops) != tops[0]).any(dim=0).sum()) if tops else 0
    return Randomness(diff, flips, calls, len(images))


def check_randomized(r: Randomness, eot: int) -> Check:
    """PASS for a deterministic model; WARN (and the suite then runs with EOT) for a randomized one."""
    what = f"{r.calls} calls on {r.n_images} images"
    if not r.randomized:
        return Check("PASS", f"model deterministic: {what} agree (max relative |diff| {r.diff:.2g} <= "
                     f"{RANDOM_TOL:g}, no top-1 caption changed)")
    return Check("WARN", f"randomized model: {what} differ (max relative |diff| {r.diff:.3g}, tolerance "
                 f"{RANDOM_TOL:g}; top-1 caption changed for {r.flips} images); the suite runs as AutoAttack's "
                 f"rand version (APGD with EOT over {eot} samples per step)",
                 "a randomized defense: report the EOT numbers, and more EOT samples if they still change")


__all__ = ["RANDOM_CALLS", "RANDOM_TOL", "Randomness", "check_randomized", "is_randomized", "probe", "starts"]
