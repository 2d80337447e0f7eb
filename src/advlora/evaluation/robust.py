"""Robust retrieval evaluation: clean and adversarial Recall@k both ways, attack success rates, the threat
model beside every number, and the sanity checks of ``advlora.evaluation.sanity``.

Protocol (documented in every result under "protocol"):
- image attacks: each image is perturbed ONCE, against its own captions, with the objective computed against
  the full clean caption gallery (``gallery="full"``, default) or only the captions of its batch
  (``gallery="batch"``, cheaper, weaker). Image-to-text: adversarial images query the clean caption gallery;
  text-to-image: clean captions query the gallery of adversarial images.
- text attacks perturb the captions (edit budget): image-to-text against the adversarial caption gallery,
  text-to-image with the adversarial captions as queries over clean images.
- joint (Co-Attack style): both perturbed; both directions use adversarial images and adversarial captions.
- random starts, restarts and Square's proposals: each image's own stream, seeded from (seed, image index,
  attack), so results do not depend on the batch size or on how images are split across processes.
- transfer: crafted with PGD on a surrogate model's contrastive objective, scored on the target.
- which attacks exist, of which kind, and how each is run and described: ``advlora.attacks.registry``.
- BLIP: scores are ITC, re-ranked by ITM on the top ``rerank_k`` (default: LAVIS's depth for the set's size,
  128, or 256 from 5,000 images: ``default_rerank_k``), for clean and adversarial alike; ``objective="rerank"``
  attacks through that re-ranking.
- ensemble: per image, the worst case over the image attacks run on the full set (highest i2t rank of its
  best positive, ties broken by the highest contrastive loss), as AutoAttack keeps the worst per sample.
Attack success rate (``advlora.metrics.attack_success_rate``): share of queries right at rank 1 clean that the
attack moves off rank 1, per direction; it is not a recall.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from advlora.attacks import ThreatModel, attack_mode, format_eps, registry
from advlora.attacks import objectives as O
from advlora.attacks.registry import AttackSpec
from advlora.attacks.seeding import SampleGenerators
from advlora.data.dataset import RetrievalDataset
from advlora.errors import AdvloraError, choices_error
from advlora.evaluation import distributed
from advlora.evaluation.images import CleanImages, ImageSource, Picked, Spill
from advlora.evaluation.retrieval import check_rerank_k, default_rerank_k, encode_images, encode_texts, itm_rerank
from advlora.evaluation.sanity import Outcomes, Probe, check_mode_restored, run_checks, verdict, white_box_reference
from advlora.evaluation.tasks import task_of
from advlora.metrics import attack_success_rate
from advlora.models.video import for_dataset

GALLERIES = ("full", "batch")
#: images encoded per forward pass when features are computed (clean and adversarial alike)
FEATURE_BATCH = 128
#: images per batch of BLIP's ITM re-ranking (their states, and the caption pairs scored from them)
ITM_BATCH = 64


def eval_attacks() -> tuple[str, ...]:
    """The names ``evaluate_robust`` accepts: every registered attack (``advlora.attacks.registry``)."""
    return registry.names()


@dataclass
class AttackResult(Mapping):
    """One attack's robust retrieval on one data set: its threat-model line, robust and clean metrics (percent),
    attack success rates per direction, sizes and time, and what some attacks add (the bounds and mode
    record of an image attack, the subset Square ran on, example adversarial captions, the ensemble's choice).

    Read as a mapping too (``result["metrics"]``; fields that are None are absent), so a result read back from
    JSON and a fresh one are read the same way; ``to_dict`` is its JSON form.
    """

    attack: str
    threat: str
    metrics: dict
    clean: dict
    asr: dict
    n_images: int
    n_texts: int
    seconds: float = 0.0
    checks: dict | None = None
    subset: str | None = None
    whitebox_on_subset: dict | None = None
    examples: list | None = None
    chosen: dict | None = None
    #: per sample: ``i2t``, the rank of each image's best positive caption; ``t2i``, of each caption's image
    ranks: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None) if key in self._names() else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    @classmethod
    def _names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


@dataclass
class _Ctx:
    model: object
    data: RetrievalDataset
    images: ImageSource                   # the clean set: uint8 pixels, floats one batch at a time
    text_features: torch.Tensor
    rerank_k: int | None
    clean_ranks: tuple[torch.Tensor, torch.Tensor] = None
    clean: dict = None
    checks: dict = field(default_factory=dict)


def _scores(model, img_feats, txt_feats, images, captions, k, txt2img) -> tuple[torch.Tensor, torch.Tensor]:
    sim = img_feats @ txt_feats.t()
    if k and model.has_itm:
        return itm_rerank(model, sim, images, captions, k, batch_size=ITM_BATCH, txt2img=txt2img)
    return sim, sim


def _measure(ctx: _Ctx, images: ImageSource, captions: list[str] | None = None) -> dict:
    """Metrics and ranks of (images, captions); clean captions/features when ``captions`` is None. The images
    are encoded ``FEATURE_BATCH`` at a time; only their features (N, D) are held."""
    model, data = ctx.model, ctx.data
    tf = ctx.text_features if captions is None else encode_texts(model, captions).clone()
    caps = data.captions if captions is None else captions
    imf = encode_images(model, images, FEATURE_BATCH)
    s_i2t, s_t2i = _scores(model, imf, tf, images, caps, ctx.rerank_k, data.txt2img)
    prec = torch.promote_types(imf.dtype, tf.dtype)   # BLIP's float64 two-stage scores hold ITC-precision values
    task = task_of(data)
    ranks, metrics = task.ranks(data, s_i2t, s_t2i, tie_dtype=prec), task.metrics(data, s_i2t, s_t2i, tie_dtype=prec)
    loss = O.multi_positive_ce(s_i2t, _positives(data, torch.arange(len(data))).to(s_i2t.device))
    return {"metrics": metrics, "ranks": ranks, "loss": loss}


def _positives(data: RetrievalDataset, idx: torch.Tensor) -> torch.Tensor:
    return task_of(data).positives(data, idx)


def _objective(name: str, ctx: _Ctx, idx: torch.Tensor, x: torch.Tensor, gallery: str, model=None,
               text_features=None, n_targets: int = 9):
    model = ctx.model if model is None else model
    tf = ctx.text_features if text_features is None else text_features
    pos = _positives(ctx.data, idx)
    if gallery == "batch":
        cols = pos.any(dim=0).nonzero().squeeze(1)
        tf, pos = tf[cols], pos[:, cols]
    if name in ("contrastive", "itc"):
        return O.contrastive(model, tf, pos)
    if name == "margin":
        return O.margin(model, tf, pos)
    if name == "dlr-targeted":
        return O.TargetedDLR(model, tf, pos, x, n_targets=n_targets)
    if name == "embedding":
        with torch.no_grad():
            return O.embedding(model, model.encode_image(x, normalize=False))
    caps = ctx.data.captions
    if name == "itm":
        return O.itm(model, [[caps[j] for j in p.nonzero().squeeze(1).tolist()] for p in _positives(ctx.data, idx)])
    if name == "rerank":
        cols = torch.arange(len(caps)) if gallery == "full" else pos.any(dim=0).nonzero().squeeze(1)
        return O.rerank(model, x, tf, pos, [caps[j] for j in cols.tolist()], k=ctx.rerank_k or 16)
    raise choices_error("objective", name, O.OBJECTIVES)


class _Watch:
    """The objective, recording the model's mode and the input range at every call; it passes on what the
    attacks read from an objective (``last_rank``, ``stationary``) and a family's ``target(j)``."""

    def __init__(self, objective, model, seen: list) -> None:
        self.objective, self.model, self.seen = objective, model, seen

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.model.training, float(x.detach().min()), float(x.detach().max())))
        return self.objective(x)

    @property
    def last_rank(self) -> torch.Tensor | None:
        return getattr(self.objective, "last_rank", None)

    @property
    def stationary(self) -> bool:
        return getattr(self.objective, "stationary", False)

    @property
    def n_targets(self) -> int:
        return self.objective.n_targets

    def target(self, j: int) -> _Watch:
        return _Watch(self.objective.target(j), self.model, self.seen)


def _attack_images(ctx: _Ctx, spec: AttackSpec, threat: ThreatModel, *, batch_size: int, gallery: str,
                   objective: str, generator, options: dict | None = None, surrogate=None,
                   key: str | None = None) -> ImageSource:
    """Run image attack ``spec`` batch by batch; records its bounds and mode in ``ctx.checks[key or name]``.
    Returns the adversarial images as the session's records (``images.AdvImages``), not as one tensor."""
    model, data, images = ctx.model, ctx.data, ctx.images
    obj_name = spec.objective or objective
    opts = spec.resolve_options(options)
    seen: list = []
    sur_tf = None
    if spec.kind == "transfer":
        if surrogate is None:
            raise AdvloraError(f"the {spec.name} attack needs a surrogate model (--surrogate)")
        sur_tf = encode_texts(surrogate, data.captions).clone()
    seed = generator.initial_seed() if generator is not None else threat.seed

    def one(idx: torch.Tensor) -> tuple[torch.Tensor, bool, bool]:
        x, gen, start = images.rows(idx).to(model.device), SampleGenerators(seed, idx, key or spec.name), len(seen)
        if spec.kind == "transfer":
            with attack_mode(surrogate):
                obj = _objective("contrastive", ctx, idx, x, gallery, surrogate, sur_tf)
                return spec.run(obj, x, threat, generator=gen, **opts), True, True
        obj = _Watch(_objective(obj_name, ctx, idx, x, gallery, n_targets=opts.get("targets", 9)), model, seen)
        out = spec.run(obj, x, threat, generator=gen, **opts)
        return (out, all(not t for t, _, _ in seen[start:]), all(lo >= 0 and hi <= 1 for _, lo, hi in seen[start:]))

    # batches split across processes, resumable, with progress: advlora.evaluation.distributed
    adv, ok_mode, ok_range = distributed.current().attack(key or spec.name, images, batch_size, one)
    ctx.checks[key or spec.name] = {**_bounds(images, adv, threat.norm),
                                    "eval_mode_during": ok_mode, "inputs_in_range_during": ok_range}
    return adv


def _bounds(clean: ImageSource, adv: ImageSource, norm: str) -> dict:
    """The largest perturbation (in ``norm``) and the pixel range of ``adv``, read batch by batch."""
    dev, lo, hi = 0.0, None, None
    for idx, a in adv.batches(FEATURE_BATCH):
        d = (a - clean.rows(idx)).reshape(len(a), -1)
        d = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        if a.numel():
            dev = max(dev, float(d.max()))
            lo = float(a.min()) if lo is None else min(lo, float(a.min()))
            hi = float(a.max()) if hi is None else max(hi, float(a.max()))
    return {"max_perturbation": dev, "min_pixel": 0.0 if lo is None else lo, "max_pixel": 1.0 if hi is None else hi}


def _text_captions(ctx: _Ctx, spec: AttackSpec, threat: ThreatModel, generator, options: dict) -> list[str]:
    imf = encode_images(ctx.model, ctx.images, FEATURE_BATCH).clone()
    obj = O.text_contrastive(ctx.model, imf, ctx.data.txt2img)
    return spec.run(obj, ctx.data.captions, threat, generator=generator, **spec.resolve_options(options))


def _joint(ctx: _Ctx, spec: AttackSpec, threat: ThreatModel, generator, batch_size: int, options: dict
           ) -> tuple[ImageSource, list[str]]:
    """The joint attack batch by batch (whole on every process); its images are spilled to a temporary folder."""
    spill = Spill()
    caps = list(ctx.data.captions)
    opts = spec.resolve_options(options)
    for idx, clean in ctx.images.batches(batch_size):
        s = int(idx[0])
        cols = torch.isin(ctx.data.txt2img, idx).nonzero().squeeze(1)
        owner = ctx.data.txt2img[cols] - s
        x, c = spec.run(ctx.model, clean.to(ctx.model.device), [caps[j] for j in cols.tolist()], owner,
                        threat, generator=generator, **opts)
        spill.write(idx, x.to(clean))
        for j, t in zip(cols.tolist(), c):
            caps[j] = t
    return spill.images(len(ctx.images), ctx.images.item_shape), caps


def describe(name: str, threat: ThreatModel, *, objective: str, gallery: str, options: dict | None = None) -> str:
    """The threat-model line written beside the numbers of attack ``name`` (its declaration's ``line``)."""
    return registry.get(name).line(threat, options or {}, {"objective": objective, "gallery": gallery})


def _result(name: str, ctx: _Ctx, res: dict, threat_line: str, **extra) -> AttackResult:
    clean_ranks = ctx.clean_ranks
    return AttackResult(name, threat_line, res["metrics"], ctx.clean,
                        {"i2t": attack_success_rate(clean_ranks[0], res["ranks"][0]),
                         "t2i": attack_success_rate(clean_ranks[1], res["ranks"][1])},
                        len(ctx.data), len(ctx.data.captions),
                        ranks={"i2t": res["ranks"][0].tolist(), "t2i": res["ranks"][1].tolist()}, **extra)


def limit_indices(n_total: int, n: int | None, seed: int = 0) -> torch.Tensor | None:
    """The image indices ``RetrievalDataset.limit(n, seed)`` keeps (None: all)."""
    if n is None or n >= n_total:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=g)[:n].sort().values


def evaluate_robust(model, dataset: RetrievalDataset, attacks: list[str] | str, threat: ThreatModel, *,
                    rerank_k: int | None = -1, batch_size: int = 32, square_limit: int | None = None,
                    square_queries: int = 1000, ensemble: bool = False, generator: torch.Generator | None = None,
                    objective: str = "contrastive", gallery: str = "full", surrogate=None, text_budget: int = 3,
                    sanity: bool = True, sanity_limit: int = 64, options: dict | None = None) -> dict:
    """Clean and robust retrieval of ``model`` on ``dataset`` under each attack of ``attacks``.

    Args:
        attacks: registered attack names (``advlora.attacks.registry``; a list or a comma string).
        threat: the budget shared by all attacks (each reads the fields its declaration lists).
        rerank_k: BLIP ITM re-ranking depth (-1: backend default, 16; 0: ITC only).
        square_limit: run the black-box attacks (Square) on a deterministic subset of this many images (their
            clean numbers are then measured on that subset too, and they are left out of the ensemble).
        square_queries, text_budget: the ``queries`` and ``text_budget`` options of the attacks that declare them.
        ensemble: add an "ensemble" entry: per image, the worst case over the image attacks on the full set.
        generator: seeds the attacks (default: ``threat.generator()``).
        objective: image-side objective of the white-box attacks (``objectives.OBJECTIVES``).
        gallery: "full" (objective against all captions) or "batch".
        surrogate: the surrogate model of the transfer attacks.
        sanity: run the checks of ``advlora.evaluation.sanity`` (the costly ones on ``sanity_limit`` images).
        options: further attack options by name (each attack takes those it declares).
    Returns:
        ``{"clean", "attacks": {name: AttackResult}, "ensemble": AttackResult, "sanity": [Check], "protocol",
        ...}``; metric values in percent.

    Memory: the clean images are held as uint8 and made floats per batch; each attack's adversarial images are
    the session's per-batch records on disk (``advlora.evaluation.distributed``), read back batch by batch; only
    per-sample values (features, ranks, losses, check values) are held for the whole set.
    """
    names = registry.check_names(attacks)
    O.check_objective(objective)
    if gallery not in GALLERIES:
        raise choices_error("gallery", gallery, GALLERIES)
    if objective in ("itm", "rerank") and not model.has_itm:
        raise AdvloraError(f"objective {objective!r} needs a model with an ITM head (BLIP)")
    if len(dataset) == 0:
        raise AdvloraError("the data set is empty")
    generator = threat.generator() if generator is None else generator
    given = {"queries": square_queries, "text_budget": text_budget, **(options or {})}
    model = for_dataset(model, dataset)  # video sets (N, F, 3, H, W): frame pooling, same contract
    surrogate = None if surrogate is None else for_dataset(surrogate, dataset)
    k = default_rerank_k(model, len(dataset)) if rerank_k == -1 else check_rerank_k(rerank_k)
    was_training = model.training
    t0 = time.perf_counter()
    attack_kw = dict(batch_size=batch_size, gallery=gallery, objective=objective)
    precision = f" precision={precision_of(model)}"
    with attack_mode(model):
        ctx = _context(model, dataset, k)
        out: dict = {"clean": ctx.clean, "n_images": len(dataset), "n_texts": len(dataset.captions),
                     "eps": float(threat.eps), "eps_str": format_eps(float(threat.eps)), "norm": threat.norm,
                     "objective": objective, "gallery": gallery, "rerank_k": k, "attacks": {},
                     "protocol": __doc__.split("Protocol (documented in every result under \"protocol\"):")[1]
                     .strip()}
        advs: dict[str, tuple[torch.Tensor, dict]] = {}
        scopes = {"full": Outcomes(ctx.clean_ranks[0])}
        runs: dict[str, tuple] = {}      # key -> (spec, threat, objective, options): what the checks re-run
        sub_ctx = None
        for name in names:
            spec = registry.get(name)
            line = describe(name, threat, objective=objective, gallery=gallery, options=given) + precision
            t = time.perf_counter()
            if spec.kind == "suite":
                entry = _run_suite(ctx, spec, threat, out, advs, runs, scopes["full"], generator=generator,
                                   options=given, precision=precision, **attack_kw)
            elif spec.kind == "black-box" and limit_indices(len(dataset), square_limit) is not None:
                if sub_ctx is None:
                    sub_ctx = _context(model, dataset.subset(limit_indices(len(dataset), square_limit)), k)
                    scopes["subset"] = Outcomes(sub_ctx.clean_ranks[0])
                adv = _attack_images(sub_ctx, spec, threat, generator=generator, options=given, **attack_kw)
                res = _measure(sub_ctx, adv)
                entry = _result(name, sub_ctx, res, line, checks=sub_ctx.checks.get(name, {}),
                                subset=f"{len(sub_ctx.data)} of {len(dataset)} images (--square-limit)")
                scopes["subset"].add(name, spec.kind, res["ranks"][0])
                wb = white_box_reference(names)
                if wb is not None:  # the gradient-masking checks need a white-box number on the same images
                    wb_adv = _attack_images(sub_ctx, registry.get(wb), threat, generator=generator, options=given,
                                            **attack_kw)
                    wb_res = _measure(sub_ctx, wb_adv)
                    entry.whitebox_on_subset = {"attack": wb, "metrics": wb_res["metrics"]}
                    scopes["subset"].add(wb, registry.get(wb).kind, wb_res["ranks"][0])
            elif spec.kind == "text":
                caps = _text_captions(ctx, spec, threat, generator, given)
                entry = _result(name, ctx, _measure(ctx, ctx.images, caps), line,
                                examples=[[a, b] for a, b in zip(dataset.captions, caps) if a != b][:5])
            elif spec.kind == "joint":
                adv, caps = _joint(ctx, spec, threat, generator, batch_size, given)
                entry = _result(name, ctx, _measure(ctx, adv, caps), line)
            else:
                adv = _attack_images(ctx, spec, threat, generator=generator, options=given, surrogate=surrogate,
                                     **attack_kw)
                res = _measure(ctx, adv)
                entry = _result(name, ctx, res, line, checks=ctx.checks.get(name, {}))
                advs[name] = (adv, res)
                if spec.kind != "transfer":
                    runs[name] = (spec, threat, objective, given)
                scopes["full"].add(name, spec.kind, res["ranks"][0])
            entry.seconds = round(time.perf_counter() - t, 2)
            out["attacks"][name] = entry
        if ensemble:
            members = [n for n in advs
                       if "/" not in n and (registry.get(n).kind != "transfer" or surrogate is not None)]
            if members:
                out["ensemble"] = _ensemble(ctx, advs, members, threat)[0]
        if sanity:
            probe = _probe(model, dataset, k, objective, gallery, batch_size, sanity_limit, runs)
            out["sanity"] = run_checks(threat, out, ctx_checks={**(sub_ctx.checks if sub_ctx else {}), **ctx.checks},
                                       probe=probe, outcomes=scopes, chance=task_of(dataset).chance(dataset))
    distributed.current().barrier()   # no process returns (and replaces the state folder) while another reads it
    if sanity:
        out["sanity"].append(check_mode_restored(model, was_training))
        out["verdict"] = verdict(out["sanity"])
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _run_suite(ctx: _Ctx, spec: AttackSpec, threat: ThreatModel, out: dict, advs: dict, runs: dict,
               outcomes: Outcomes, *, generator, options: dict, precision: str, batch_size: int, gallery: str,
               objective: str) -> AttackResult:
    """Run every member of suite ``spec`` on all images (its own row ``<suite>/<member>`` in ``out``), then
    return the suite's row: per image the worst member by image-to-text rank."""
    model, k = ctx.model, ctx.rerank_k
    keys = []
    for m in spec.members:
        if m.needs_itm and not (model.has_itm and k):
            continue
        key, mspec, mthreat = f"{spec.name}/{m.label}", registry.get(m.attack), threat.replace(**m.changes)
        mobj, mopts = m.objective or objective, {**options, **m.options}
        t = time.perf_counter()
        adv = _attack_images(ctx, mspec, mthreat, generator=generator, options=mopts, key=key,
                             batch_size=batch_size, gallery=gallery, objective=mobj)
        res = _measure(ctx, adv)
        line = describe(m.attack, mthreat, objective=mobj, gallery=gallery, options=mopts) + precision
        entry = _result(m.attack, ctx, res, line, checks=ctx.checks.get(key, {}))
        entry.seconds = round(time.perf_counter() - t, 2)
        out["attacks"][key], runs[key], advs[key] = entry, (mspec, mthreat, mobj, mopts), (adv, res)
        outcomes.add(key, mspec.kind, res["ranks"][0])
        keys.append(key)
    line = spec.line(threat, {}, {"itm": bool(model.has_itm and k)}) + precision
    entry, ranks = _ensemble(ctx, advs, keys, threat, name=spec.name, line=line)
    outcomes.add(spec.name, spec.kind, ranks)
    return entry


def precision_of(model) -> str:
    """The floating-point type the model computes in (``float32``), for the threat-model lines."""
    p = next(iter(model.parameters()), None)
    return str(p.dtype).replace("torch.", "") if p is not None else "float32"


def _probe(model, dataset: RetrievalDataset, k, objective: str, gallery: str, batch_size: int,
           limit: int | None, runs: dict[str, tuple]) -> Probe:
    """The sanity checks' view of a deterministic subset of ``limit`` images: a batch with the objective in
    use, and re-running an image attack of ``runs`` there (its objective and options) under another threat
    model (a fresh generator from its seed)."""
    idx = limit_indices(len(dataset), limit)
    small = dataset if idx is None else dataset.subset(idx)
    ctx = _context(model, small, k)
    sel = torch.arange(min(len(small), batch_size))
    x = ctx.images.rows(sel).to(model.device)
    grad_objective = _objective(objective, ctx, sel, x, gallery)   # the objective in use
    if getattr(grad_objective, "stationary", False):               # tested where the attacks start
        x = (x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(x)).clamp(0, 1)

    def rerun(key: str, threat: ThreatModel) -> dict:
        spec, _, obj, opts = runs[key]
        adv = _attack_images(ctx, spec, threat, batch_size=batch_size, gallery=gallery, objective=obj,
                             generator=threat.generator(), options=opts)
        return _measure(ctx, adv)["metrics"]

    return Probe(len(small), small.txt2img, x, grad_objective, rerun,
                 {key: (spec.name, th) for key, (spec, th, _, _) in runs.items()}, chance=task_of(small).chance(small))


def _context(model, dataset: RetrievalDataset, k) -> _Ctx:
    images = CleanImages(dataset.load_images_uint8(model.image_size))   # floats per batch, never the whole set
    tf = encode_texts(model, dataset.captions).clone()   # a normal tensor: usable inside autograd graphs
    ctx = _Ctx(model, dataset, images, tf, k)
    res = _measure(ctx, images)
    ctx.clean, ctx.clean_ranks = res["metrics"], res["ranks"]
    return ctx


def _ensemble(ctx: _Ctx, advs: dict, members: list[str], threat: ThreatModel, *, name: str = "ensemble",
              line: str | None = None) -> tuple[AttackResult, torch.Tensor]:
    """Per image, the member attack whose adversarial image ranks its best positive lowest; ties broken by the
    mean text-to-image rank of the image's captions in that attack's run, then by the contrastive loss.

    Image-to-text recall is then at most every member's; text-to-image recall depends on the whole gallery of
    adversarial images, so it is usually, not provably, at most the members'.
    """
    t2i = ctx.data.txt2img
    n = len(ctx.data)
    ranks = torch.stack([advs[m][1]["ranks"][0].float().cpu() for m in members])     # (A, N)
    loss = torch.stack([advs[m][1]["loss"].float().cpu() for m in members])          # (A, N)
    counts = torch.bincount(t2i, minlength=n).clamp_min(1).float()
    t2i_mean = torch.stack([torch.zeros(n).index_add(0, t2i, advs[m][1]["ranks"][1].float().cpu()) / counts
                            for m in members])                                        # (A, N)
    # lexicographic (i2t rank, mean t2i rank, loss) in float64: ranks and t2i means are exact there
    key = (ranks.double() * (n + 1) + t2i_mean.double()) * 1e3 + loss.double().clamp(-1e2, 1e2) / 1e2
    pick = key.argmax(dim=0)                                                          # (N,)
    adv = Picked([advs[m][0] for m in members], pick)         # per sample the chosen member's row, read lazily
    if line is None:
        line = (f"{threat.norm} eps={format_eps(float(threat.eps))} ensemble(per-sample worst of {', '.join(members)})"
                f" precision={precision_of(ctx.model)}")
    res = _measure(ctx, adv)
    entry = _result(name, ctx, res, line, chosen={n: int((pick == i).sum()) for i, n in enumerate(members)})
    return entry, res["ranks"][0]


__all__ = ["AttackResult", "describe", "eval_attacks", "evaluate_robust", "limit_indices"]
