"""How each kind of attack is run inside ``evaluate_robust``: the objective an image attack maximises, the
watch on the model's mode and input range, image attacks batch by batch (on all images or on a subset),
text and joint attacks, and the result row built from a measurement.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from advlora.attacks import ThreatModel, attack_mode
from advlora.attacks import objectives as O
from advlora.attacks.attack_objective import TargetFamily, Wrapper
from advlora.attacks.image_objectives import ObjectiveInputs
from advlora.attacks.image_objectives import build as build_objective
from advlora.attacks.joint import Pairs
from advlora.attacks.registry import AttackSpec
from advlora.attacks.seeding import SampleGenerators
from advlora.attacks.stopping import report_rank, stop_at_rank
from advlora.errors import AdvloraError
from advlora.evaluation import distributed
from advlora.evaluation.images import ImageSource, Spill, SubsetImages
from advlora.evaluation.measure import Ctx, positives, reported_i2t_rank
from advlora.evaluation.plan import EvalPlan
from advlora.evaluation.results import FEATURE_BATCH, KS, AttackResult
from advlora.evaluation.retrieval import encode_images, encode_texts
from advlora.metrics import attack_success_rate


def objective_for(name: str, ctx: Ctx, idx: torch.Tensor, x: torch.Tensor, gallery: str, *,
                  surrogate: tuple | None = None, n_targets: int = 9, rank_k: int = 1):
    """The declared image objective ``name`` (``attacks.image_objectives``) for the images ``idx`` (clean pixels
    ``x``) of ``ctx``'s set; the margin, DLR and targeted objectives aim at the reported ranks (``KS``) below
    ``rank_k`` and at ``rank_k`` (the suite's exit rank), each image at the lowest it has not reached
    (``objectives.staged``). ``surrogate``: (model, its caption features) to build it on instead of ``ctx``'s."""
    model, text_features = (None, None) if surrogate is None else surrogate
    own = model is None or model is ctx.model
    model = ctx.model if model is None else model
    tf = ctx.text_features if text_features is None else text_features
    # the clean features already measured: the clean image then competes in the attack without a forward
    cf = ctx.clean_features[idx.to(ctx.clean_features.device)] if own and ctx.clean_features is not None else None
    # a fixed logit scale (a protocol's) belongs to the attacked model, not to a surrogate
    return build_objective(name, ObjectiveInputs(
        model, x, tf, positives(ctx.data, idx), ctx.data.captions, gallery, cf,
        ranks=(*(j for j in KS if j < rank_k), rank_k), n_targets=n_targets, rerank_k=ctx.rerank_k,
        logit_scale=ctx.logit_scale if own else None))


class Watch(Wrapper):
    """The objective, recording the model's mode and the input range at every call; every other declared
    attribute is the objective's (``attack_objective.Wrapper``). ``eot``: the calls per gradient this run asks
    for. It reports an outcome (None without a gallery), so every image attack of an evaluation lets the clean
    image compete for the worst case."""

    ranked = True
    eot = 1

    def __init__(self, objective, model, seen: list, eot: int = 1) -> None:
        super().__init__(objective)
        self.model, self.seen, self.eot = model, seen, eot

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.model.training, float(x.detach().min()), float(x.detach().max())))
        return self.inner(x)


class WatchFamily(TargetFamily):
    """A targeted family whose every objective is a ``Watch``."""

    def __init__(self, family: TargetFamily, model, seen: list, eot: int = 1) -> None:
        self.family, self.model, self.seen, self.eot = family, model, seen, eot
        self.n_targets = family.n_targets

    def target(self, j: int) -> Watch:
        return Watch(self.family.target(j), self.model, self.seen, self.eot)

    def targets_of(self, js) -> Watch:
        return Watch(self.family.targets_of(js), self.model, self.seen, self.eot)

    @property
    def finished(self) -> bool:
        return self.family.finished


def watch(objective, model, seen: list, eot: int = 1) -> Watch | WatchFamily:
    """``objective`` (or a targeted family) watched (``Watch``)."""
    if isinstance(objective, TargetFamily):
        return WatchFamily(objective, model, seen, eot)
    return Watch(objective, model, seen, eot)


@dataclass(frozen=True)
class ImageRun:
    """How one image attack runs beyond the plan: under ``key`` (its checks' and records' name; None: the attack's
    name), on ``subset`` only (global indices; the result's rows follow it, in batches packed from it), with
    ``eot`` calls per gradient (a randomized model), stopping each image once its i2t rank reaches ``done_rank``
    (``attacks.stopping``; not under EOT, where one call's rank is one draw), the margin and targeted objectives
    aiming at ``rank_k`` (default ``done_rank``, else 1), and ``surrogate`` (the transfer attacks' model)."""

    key: str | None = None
    subset: torch.Tensor | None = None
    eot: int = 1
    done_rank: int | None = None
    rank_k: int | None = None
    surrogate: object = None


@dataclass(frozen=True)
class ImageAttack:
    """What one run of an image attack measured: its adversarial ``images`` (the session's records,
    ``images.AdvImages``) and ``checks``, the record the sanity checks read (``bounds``: the largest perturbation,
    the pixel range and the non-finite images; and whether the model stayed in eval mode and every input in
    [0, 1] during the attack)."""

    images: ImageSource
    checks: dict


def attack_images(ctx: Ctx, spec: AttackSpec, threat: ThreatModel, plan: EvalPlan, *, generator,
                  objective: str | None = None, options: dict | None = None, run: ImageRun = ImageRun()
                  ) -> ImageAttack:
    """Run image attack ``spec`` batch by batch on ``plan``'s batch size and gallery, maximising ``objective``
    (None: the plan's; an attack that fixes one: its own) with ``options`` (None: the plan's for this attack);
    returns its images and its bounds and mode record (``ImageAttack``). ``run``: subset, EOT, early stop and rank
    (``ImageRun``). On a model that re-ranks by ITM (BLIP) the rank an image is done by, and by which each attack
    keeps its worst point, is the two-stage rank the metrics report (``measure.reported_i2t_rank``), at the cost
    of a forward and of scoring the ITC top-k pairs by ITM per query of an image ranked within the re-rank
    depth."""
    key, subset, eot, done_rank, rank_k, surrogate = (run.key, run.subset, run.eot, run.done_rank, run.rank_k,
                                                      run.surrogate)
    gallery = plan.gallery
    options = plan.options_for(spec.name) if options is None else options
    objective = plan.objective if objective is None else objective
    model, data = ctx.model, ctx.data
    images = ctx.images if subset is None else SubsetImages(ctx.images, subset)
    glob = (lambda i: i) if subset is None else (lambda i: images.indices[i])   # noqa: E731
    obj_name = spec.objective or objective
    opts = spec.resolve_options(options)
    seen: list = []
    sur_tf = None
    if spec.kind == "transfer":
        if surrogate is None:
            raise AdvloraError(f"the {spec.name} attack needs a surrogate model (--surrogate)")
        sur_tf = encode_texts(surrogate, data.captions).clone()
    seed = generator.initial_seed() if generator is not None else threat.seed
    two_stage = bool(ctx.rerank_k and model.has_itm)

    def one(local: torch.Tensor) -> tuple[torch.Tensor, bool, bool]:
        idx = glob(local)
        x, gen, start = images.rows(local).to(model.device), SampleGenerators(seed, idx, key or spec.name), len(seen)
        if spec.kind == "transfer":
            with attack_mode(surrogate):
                obj = objective_for("contrastive", ctx, idx, x, gallery, surrogate=(surrogate, sur_tf))
                return spec.attack(obj, x, threat, generator=gen, options=opts), True, True
        obj = objective_for(obj_name, ctx, idx, x, gallery, n_targets=opts.get("targets", 9),
                            rank_k=rank_k or done_rank or 1)
        if two_stage:            # done, and the worst point kept, by the rank the metrics report
            obj = report_rank(obj, lambda xs, rows, idx=idx: reported_i2t_rank(ctx, xs, idx[rows.to(idx.device)]),
                              ctx.clean_ranks[0][idx.to(ctx.clean_ranks[0].device)].cpu())
        obj = watch(stop_at_rank(obj, done_rank if eot == 1 else None), model, seen, eot)
        out = spec.attack(obj, x, threat, generator=gen, options=opts)
        return (out, all(not t for t, _, _ in seen[start:]), all(lo >= 0 and hi <= 1 for _, lo, hi in seen[start:]))

    # batches split across processes, resumable, with progress: advlora.evaluation.distributed
    adv, ok_mode, ok_range = distributed.current().attack(key or spec.name, images, plan.batch_size, one)
    return ImageAttack(adv, {**bounds(images, adv, threat.norm),
                             "eval_mode_during": ok_mode, "inputs_in_range_during": ok_range})


def bounds(clean: ImageSource, adv: ImageSource, norm: str) -> dict:
    """The largest perturbation (in ``norm``) and the pixel range of ``adv``, read batch by batch, and how many
    of its images hold a non-finite value (NaN or inf): Python's ``max`` and ``min`` drop a NaN, so it is
    counted apart and the range is that of the finite values."""
    dev, lo, hi, bad = 0.0, None, None, 0
    for idx, a in adv.batches(FEATURE_BATCH):
        finite = torch.isfinite(a).reshape(len(a), -1).all(1)
        bad += int((~finite).sum())
        a, c = a[finite], clean.rows(idx)[finite]
        d = (a - c).reshape(len(a), -1)
        d = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        if a.numel():
            dev = max(dev, float(d.max()))
            lo = float(a.min()) if lo is None else min(lo, float(a.min()))
            hi = float(a.max()) if hi is None else max(hi, float(a.max()))
    return {"max_perturbation": dev, "min_pixel": 0.0 if lo is None else lo, "max_pixel": 1.0 if hi is None else hi,
            "non_finite": bad}


def text_captions(ctx: Ctx, spec: AttackSpec, threat: ThreatModel, generator, options: dict) -> list[str]:
    """The adversarial captions of text attack ``spec`` against the clean image gallery."""
    imf = encode_images(ctx.model, ctx.images, FEATURE_BATCH).clone()
    obj = O.text_contrastive(ctx.model, imf, ctx.data.txt2img)
    return spec.attack(obj, ctx.data.captions, threat, generator=generator, options=options)


def joint(ctx: Ctx, spec: AttackSpec, threat: ThreatModel, generator, batch_size: int, options: dict
          ) -> tuple[ImageSource, list[str]]:
    """The joint attack batch by batch (whole on every process), run as every attack is (``spec.attack``) on
    each batch's ``joint.Pairs``; its images are spilled to a temporary folder."""
    spill = Spill()
    caps = list(ctx.data.captions)
    for idx, clean in ctx.images.batches(batch_size):
        s = int(idx[0])
        cols = torch.isin(ctx.data.txt2img, idx).nonzero().squeeze(1)
        pairs = Pairs(ctx.model, [caps[j] for j in cols.tolist()], ctx.data.txt2img[cols] - s)
        x, c = spec.attack(pairs, clean.to(ctx.model.device), threat, generator=generator, options=options)
        spill.write(idx, x.to(clean))
        for j, t in zip(cols.tolist(), c):
            caps[j] = t
    return spill.images(len(ctx.images), ctx.images.item_shape), caps


def result(name: str, ctx: Ctx, res: dict, threat_line: str, **extra) -> AttackResult:
    """The row of attack ``name`` from its measurement ``res`` (``measure.measure``)."""
    clean_ranks = ctx.clean_ranks
    return AttackResult(name, threat_line, res["metrics"], ctx.clean,
                        {"i2t": attack_success_rate(clean_ranks[0], res["ranks"][0]),
                         "t2i": attack_success_rate(clean_ranks[1], res["ranks"][1])},
                        len(ctx.data), len(ctx.data.captions),
                        ranks={"i2t": res["ranks"][0].tolist(), "t2i": res["ranks"][1].tolist()}, **extra)


__all__ = ["ImageAttack", "ImageRun", "Watch", "WatchFamily", "attack_images", "bounds", "joint", "objective_for",
           "result", "text_captions", "watch"]
