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
- transfer: crafted with PGD on a surrogate model's contrastive objective, scored on the target.
- BLIP: scores are ITC, re-ranked by ITM on the top ``rerank_k`` (default 16) as in LAVIS, for clean and
  adversarial alike; ``objective="rerank"`` attacks through that re-ranking.
- ensemble: per image, the worst case over the image attacks run on the full set (highest i2t rank of its
  best positive, ties broken by the highest contrastive loss), as AutoAttack keeps the worst per sample.
Attack success rate (``advlora.metrics.attack_success_rate``): share of queries right at rank 1 clean that the
attack moves off rank 1, per direction; it is not a recall.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from advlora.attacks import ThreatModel, attack_mode, co_attack, format_eps, run_attack, text_attack
from advlora.attacks import objectives as O
from advlora.data.dataset import RetrievalDataset
from advlora.errors import AdvloraError, choices_error
from advlora.evaluation.retrieval import default_rerank_k, encode_images, encode_texts, itm_rerank
from advlora.metrics import attack_success_rate, i2t_ranks, retrieval_recall, t2i_ranks

#: names accepted by ``evaluate_robust``: the image attacks, "apgd-margin" (APGD on the margin objective),
#: "text" (character-level captions) and "joint" (Co-Attack style); "transfer" needs ``surrogate``.
EVAL_ATTACKS = ("fgsm", "pgd", "apgd", "apgd-margin", "square", "transfer", "text", "joint")
WHITE_BOX = ("fgsm", "pgd", "apgd", "apgd-margin")
GALLERIES = ("full", "batch")


@dataclass
class _Ctx:
    model: object
    data: RetrievalDataset
    images: torch.Tensor
    text_features: torch.Tensor
    rerank_k: int | None
    clean_ranks: tuple[torch.Tensor, torch.Tensor] = None
    clean: dict = None
    checks: dict = field(default_factory=dict)


def _scores(model, img_feats, txt_feats, images, captions, k) -> tuple[torch.Tensor, torch.Tensor]:
    sim = img_feats @ txt_feats.t()
    if k and model.has_itm:
        return itm_rerank(model, sim, images, captions, k)
    return sim, sim


def _measure(ctx: _Ctx, images: torch.Tensor, captions: list[str] | None = None, batch_size: int = 128) -> dict:
    """Metrics and ranks of (images, captions); clean captions/features when ``captions`` is None."""
    model, data = ctx.model, ctx.data
    tf = ctx.text_features if captions is None else encode_texts(model, captions).clone()
    caps = data.captions if captions is None else captions
    imf = encode_images(model, images, batch_size)
    s_i2t, s_t2i = _scores(model, imf, tf, images, caps, ctx.rerank_k)
    ranks = (i2t_ranks(s_i2t, data.txt2img), t2i_ranks(s_t2i, data.txt2img))
    metrics = retrieval_recall(s_i2t, data.txt2img, sim_t2i=s_t2i)
    loss = O.multi_positive_ce(s_i2t, _positives(data, torch.arange(len(data))).to(s_i2t.device))
    return {"metrics": metrics, "ranks": ranks, "loss": loss}


def _positives(data: RetrievalDataset, idx: torch.Tensor) -> torch.Tensor:
    return data.txt2img[None, :] == idx[:, None]


def _objective(name: str, ctx: _Ctx, idx: torch.Tensor, x: torch.Tensor, gallery: str, model=None,
               text_features=None):
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


def _watch(objective, model, seen: list):
    """Record the model's mode and the input range at every call of the objective."""
    def wrapped(x):
        seen.append((model.training, float(x.detach().min()), float(x.detach().max())))
        return objective(x)
    return wrapped


def _attack_images(ctx: _Ctx, name: str, threat: ThreatModel, *, batch_size: int, gallery: str,
                   objective: str, generator, queries: int, surrogate=None) -> torch.Tensor:
    model, data, images = ctx.model, ctx.data, ctx.images
    adv = torch.empty_like(images)
    obj_name = "margin" if name == "apgd-margin" else objective
    base = "apgd" if name == "apgd-margin" else name
    seen: list = []
    sur_tf = None
    if name == "transfer":
        if surrogate is None:
            raise AdvloraError("the transfer attack needs a surrogate model (--surrogate)")
        sur_tf = encode_texts(surrogate, data.captions).clone()
    for s in range(0, len(images), batch_size):
        idx = torch.arange(s, min(s + batch_size, len(images)))
        x = images[idx].to(model.device)
        if name == "transfer":
            with attack_mode(surrogate):
                obj = _objective("contrastive", ctx, idx, x, gallery, surrogate, sur_tf)
                adv[idx] = run_attack("transfer", obj, x, threat, generator=generator).to(adv)
            continue
        obj = _watch(_objective(obj_name, ctx, idx, x, gallery), model, seen)
        adv[idx] = run_attack(base, obj, x, threat, generator=generator, queries=queries).to(adv)
    dev = (adv - images).reshape(len(images), -1)
    dev = dev.abs().amax(1) if threat.norm == "linf" else dev.norm(dim=1)
    ctx.checks[name] = {"max_perturbation": float(dev.max()) if len(dev) else 0.0,
                        "min_pixel": float(adv.min()) if adv.numel() else 0.0,
                        "max_pixel": float(adv.max()) if adv.numel() else 1.0,
                        "eval_mode_during": all(not t for t, _, _ in seen),
                        "inputs_in_range_during": all(lo >= 0 and hi <= 1 for _, lo, hi in seen)}
    return adv


def _text_captions(ctx: _Ctx, threat: ThreatModel, generator, text_budget: int) -> list[str]:
    imf = encode_images(ctx.model, ctx.images).clone()
    obj = O.text_contrastive(ctx.model, imf, ctx.data.txt2img)
    return text_attack(obj, ctx.data.captions, budget=text_budget, generator=generator)


def _joint(ctx: _Ctx, threat: ThreatModel, generator, batch_size: int, text_budget: int):
    adv = torch.empty_like(ctx.images)
    caps = list(ctx.data.captions)
    for s in range(0, len(ctx.images), batch_size):
        idx = torch.arange(s, min(s + batch_size, len(ctx.images)))
        cols = torch.isin(ctx.data.txt2img, idx).nonzero().squeeze(1)
        owner = ctx.data.txt2img[cols] - s
        x, c = co_attack(ctx.model, ctx.images[idx].to(ctx.model.device), [caps[j] for j in cols.tolist()], owner,
                         eps=float(threat.eps), steps=threat.steps, step_size=threat.step, norm=threat.norm,
                         restarts=threat.restarts, random_start=threat.random_start, text_budget=text_budget,
                         generator=generator)
        adv[idx] = x.to(adv)
        for j, t in zip(cols.tolist(), c):
            caps[j] = t
    return adv, caps


def describe(name: str, threat: ThreatModel, *, objective: str, queries: int, text_budget: int,
             gallery: str) -> str:
    """The threat-model line written beside the numbers of attack ``name``."""
    obj = "margin" if name == "apgd-margin" else objective
    if name == "square":
        return threat.describe(f"Square queries={queries}", objective=obj)
    if name == "text":
        return f"text char-edits<={text_budget} greedy objective=text-contrastive"
    if name == "joint":
        return threat.describe("Co-Attack(PGD)", text_edits=text_budget)
    if name == "transfer":
        return threat.describe("transfer(PGD on surrogate)", gallery=gallery)
    return threat.describe("APGD" if name.startswith("apgd") else name, objective=obj, gallery=gallery)


def _entry(ctx: _Ctx, res: dict, threat_line: str, clean: dict, clean_ranks) -> dict:
    return {"threat": threat_line, "metrics": res["metrics"], "clean": clean,
            "asr": {"i2t": attack_success_rate(clean_ranks[0], res["ranks"][0]),
                    "t2i": attack_success_rate(clean_ranks[1], res["ranks"][1])},
            "n_images": len(ctx.data), "n_texts": len(ctx.data.captions)}


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
                    sanity: bool = True, sanity_limit: int = 64) -> dict:
    """Clean and robust retrieval of ``model`` on ``dataset`` under each attack of ``attacks``.

    Args:
        attacks: names from ``EVAL_ATTACKS`` (a list or a comma string).
        threat: the budget shared by all attacks (FGSM uses one step of eps, Square ``square_queries``).
        rerank_k: BLIP ITM re-ranking depth (-1: backend default, 16; 0: ITC only).
        square_limit: run Square on a deterministic subset of this many images (its clean numbers are then
            measured on that subset too, and it is left out of the ensemble).
        ensemble: add an "ensemble" entry: per image, the worst case over the image attacks on the full set.
        generator: seeds the attacks (default: ``threat.generator()``).
        objective: image-side objective of the white-box attacks (``objectives.OBJECTIVES``).
        gallery: "full" (objective against all captions) or "batch".
        surrogate: the surrogate model of the "transfer" attack.
        sanity: run the checks of ``advlora.evaluation.sanity`` (on ``sanity_limit`` images).
    Returns:
        ``{"clean", "attacks": {name: {"threat", "metrics", "clean", "asr", "n_images", ...}}, "ensemble",
        "sanity": [lines], "protocol", ...}``; metric values in percent.
    """
    names = [a.strip() for a in attacks.split(",")] if isinstance(attacks, str) else list(attacks)
    for a in names:
        if a not in EVAL_ATTACKS:
            raise choices_error("attack", a, EVAL_ATTACKS)
    O.check_objective(objective)
    if gallery not in GALLERIES:
        raise choices_error("gallery", gallery, GALLERIES)
    if objective in ("itm", "rerank") and not model.has_itm:
        raise AdvloraError(f"objective {objective!r} needs a model with an ITM head (BLIP)")
    if len(dataset) == 0:
        raise AdvloraError("the data set is empty")
    generator = threat.generator() if generator is None else generator
    from advlora.models.video import for_dataset

    model = for_dataset(model, dataset)  # video sets (N, F, 3, H, W): frame pooling, same contract
    surrogate = None if surrogate is None else for_dataset(surrogate, dataset)
    k = default_rerank_k(model) if rerank_k == -1 else rerank_k
    was_training = model.training
    t0 = time.perf_counter()
    with attack_mode(model):
        ctx = _context(model, dataset, k)
        out: dict = {"clean": ctx.clean, "n_images": len(dataset), "n_texts": len(dataset.captions),
                     "eps": float(threat.eps), "eps_str": format_eps(float(threat.eps)), "norm": threat.norm,
                     "objective": objective, "gallery": gallery, "rerank_k": k, "attacks": {},
                     "protocol": __doc__.split("Protocol (documented in every result under \"protocol\"):")[1]
                     .strip()}
        advs: dict[str, tuple[torch.Tensor, dict]] = {}
        sub_ctx = None
        for name in names:
            line = describe(name, threat, objective=objective, queries=square_queries, text_budget=text_budget,
                            gallery=gallery)
            t = time.perf_counter()
            if name == "square" and limit_indices(len(dataset), square_limit) is not None:
                if sub_ctx is None:
                    sub_ctx = _context(model, dataset.subset(limit_indices(len(dataset), square_limit)), k)
                adv = _attack_images(sub_ctx, name, threat, batch_size=batch_size, gallery=gallery,
                                     objective=objective, generator=generator, queries=square_queries)
                res = _measure(sub_ctx, adv)
                entry = _entry(sub_ctx, res, line, sub_ctx.clean, sub_ctx.clean_ranks)
                entry["subset"] = f"{len(sub_ctx.data)} of {len(dataset)} images (--square-limit)"
                entry["checks"] = sub_ctx.checks.get(name, {})
                wb = next((a for a in ("pgd", "apgd", "apgd-margin", "fgsm") if a in names), None)
                if wb is not None:  # the gradient-masking check needs a white-box number on the same images
                    wb_adv = _attack_images(sub_ctx, wb, threat, batch_size=batch_size, gallery=gallery,
                                            objective=objective, generator=generator, queries=square_queries)
                    entry["whitebox_on_subset"] = {"attack": wb, "metrics": _measure(sub_ctx, wb_adv)["metrics"]}
            elif name == "text":
                caps = _text_captions(ctx, threat, generator, text_budget)
                res = _measure(ctx, ctx.images, caps)
                entry = _entry(ctx, res, line, ctx.clean, ctx.clean_ranks)
                entry["examples"] = [[a, b] for a, b in zip(dataset.captions, caps) if a != b][:5]
            elif name == "joint":
                adv, caps = _joint(ctx, threat, generator, batch_size, text_budget)
                res = _measure(ctx, adv, caps)
                entry = _entry(ctx, res, line, ctx.clean, ctx.clean_ranks)
            else:
                adv = _attack_images(ctx, name, threat, batch_size=batch_size, gallery=gallery,
                                     objective=objective, generator=generator, queries=square_queries,
                                     surrogate=surrogate)
                res = _measure(ctx, adv)
                entry = _entry(ctx, res, line, ctx.clean, ctx.clean_ranks)
                entry["checks"] = ctx.checks.get(name, {})
                advs[name] = (adv, res)
            entry["seconds"] = round(time.perf_counter() - t, 2)
            out["attacks"][name] = entry
        if ensemble:
            members = [n for n in advs if n != "transfer" or surrogate is not None]
            if members:
                out["ensemble"] = _ensemble(ctx, advs, members, threat)
        if sanity:
            from advlora.evaluation.sanity import run_checks

            out["sanity"] = run_checks(model, dataset, threat, out, ctx_checks={**(sub_ctx.checks if sub_ctx else {}),
                                       **ctx.checks}, objective=objective,
                                       gallery=gallery, batch_size=batch_size, limit=sanity_limit,
                                       rerank_k=k, was_training=was_training)
    if sanity:
        from advlora.evaluation.sanity import check_mode_restored

        out["sanity"].append(check_mode_restored(model, was_training))
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _context(model, dataset: RetrievalDataset, k) -> _Ctx:
    images = dataset.load_images(model.image_size)
    tf = encode_texts(model, dataset.captions).clone()   # a normal tensor: usable inside autograd graphs
    ctx = _Ctx(model, dataset, images, tf, k)
    res = _measure(ctx, images)
    ctx.clean, ctx.clean_ranks = res["metrics"], res["ranks"]
    return ctx


def _ensemble(ctx: _Ctx, advs: dict, members: list[str], threat: ThreatModel) -> dict:
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
    stack = torch.stack([advs[n][0] for n in members])                                # (A, N, ...)
    adv = stack[pick, torch.arange(stack.shape[1])]
    res = _measure(ctx, adv)
    entry = _entry(ctx, res, f"{threat.norm} eps={format_eps(float(threat.eps))} ensemble(per-sample worst of "
                   f"{', '.join(members)})", ctx.clean, ctx.clean_ranks)
    entry["chosen"] = {n: int((pick == i).sum()) for i, n in enumerate(members)}
    return entry


__all__ = ["EVAL_ATTACKS", "evaluate_robust", "describe", "limit_indices"]
