"""Retrieval objectives for the attacks: builders returning ``objective(images) -> Tensor[B]`` to maximise.

Image side (the query image attacks the caption gallery):
- ``contrastive`` / ``itc``: multi-positive cross-entropy of each image against a caption gallery or a batch
  (CLIP's InfoNCE with every caption of the image as a positive); the APGD paper's "CE" (arXiv 2003.01690).
- ``margin``: the k-th best negative minus the best positive cosine similarity (Carlini and Wagner's margin,
  arXiv 1608.04644, on the cosine scores, aimed at rank k: >= 0 once the image is off R@k).
- ``dlr``: that margin divided by the spread of the top scores, ``pi_1 - pi_3`` (AutoAttack's untargeted DLR,
  arXiv 2003.01690), with the image's own captions collapsed to the best one.
``LOSSES`` are the three losses a white-box attack can maximise (cross-entropy, CW margin, DLR): ``--objective``
of the evaluation and ``attack.attack_loss`` of training name them.
- ``TargetedDLR``: targeted scale-invariant margins towards clean negatives below the best positive (APGD-T's
  objectives), aimed at rank k, on the scores with the image's own captions collapsed to the best one.
``k`` is one rank, or the increasing ranks an evaluation reports up to its exit rank (``evaluate_robust(exit_k=)``;
1 is AutoAttack's misclassification): then each image aims at the lowest of them it has not reached
(``staged``), so rank 1 comes first and the last rank is still aimed at.
Gallery objectives are ``RankedObjective``s: besides the loss they report each image's retrieval outcome (the
rank of its best positive), from the scores the loss is computed from, so attacks keep the worst outcome.
- ``embedding``: squared l2 distance to the clean embedding (FARE, Schlarmann et al. 2024, arXiv 2402.12336).
- BLIP: ``itm`` (the negative ITM match logit of the image with its own captions) and ``rerank`` (cross-entropy
  over ITM + ITC scores of a fixed candidate set: the clean top-k ITC captions plus the positives, i.e. an
  attack through LAVIS's two-stage retrieval, not only ITC).
Text side (for the text-to-image direction and text attacks): ``text_contrastive`` returns
``objective(texts: list[str], rows: Tensor[long]) -> Tensor[len(texts)]``.

Images are pixel tensors in [0, 1] of shape (B, ...); the model's ``encode_image`` does resizing/normalising.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from advlora.errors import AdvloraError, choices_error
from advlora.losses import multi_positive_ce
from advlora.metrics import tie_scale, tie_tolerance

Objective = Callable[[torch.Tensor], torch.Tensor]
TextObjective = Callable[[list, torch.Tensor], torch.Tensor]


class RankedObjective:
    """An image objective that also reports the retrieval outcome of its last call, at no extra cost.

    ``fn(images) -> (loss (B,), scores (B, N), positives (B, N))``: the per-sample loss and the gallery scores it
    was computed from. Calling the objective returns the loss; ``last_rank`` is then, per sample, the rank of
    its best positive among those scores (0 = first; a tie with a negative counts against the query; a
    non-finite positive score is a miss, rank N). The attacks keep the worst outcome per sample from it
    (``advlora.attacks._utils.WorstCase``).
    """

    stationary = False

    def __init__(self, fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                 clean: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                 restrict: Callable[[torch.Tensor], Callable] | None = None) -> None:
        self.fn = fn
        #: ``restrict(rows)`` -> the ``fn`` of the objective of those rows of the batch alone (``select``)
        self.restrict = restrict
        self.last_rank: torch.Tensor | None = None
        #: (loss, rank) at the clean images when ``clean`` (loss, scores, positives there) is given: the
        #: attacks then let the clean image compete without a forward (``_utils.WorstCase.score_clean``)
        self.clean_outcome = None if clean is None else (clean[0].detach(), best_positive_rank(clean[1], clean[2]))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        loss, scores, positives = self.fn(images)
        self.last_rank = best_positive_rank(scores, positives)
        return loss

    @property
    def selectable(self) -> bool:
        """Whether ``select`` can restrict this objective to some rows of its batch."""
        return self.restrict is not None

    def select(self, rows: torch.Tensor) -> RankedObjective:
        """The objective of the batch's ``rows`` alone (called on those images, in that order): row b of the
        result is row ``rows[b]`` of this one, with the same loss and outcome (``attacks.stopping`` uses it to
        stop querying rows that are done)."""
        if self.restrict is None:
            raise AdvloraError("this objective cannot be restricted to rows of its batch")
        return RankedObjective(self.restrict(torch.as_tensor(rows, dtype=torch.long)))


def best_positive_rank(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """(B,) rank of each row's best positive among ``scores`` (B, N): negatives scoring at least as high, less
    ``advlora.metrics.tie_tolerance`` of the row's largest finite ``|score|``, count (ties go against the query,
    also when two kernels rounded them apart); NaN negatives count too, -inf ones (candidates left out) do not;
    a row whose best positive is not finite gets N (a miss). The scale is the row's own, so a sample's rank
    does not depend on the batch it came in."""
    with torch.no_grad():
        s = scores.detach().float()
        tol = tie_tolerance(tie_scale(s, dim=1), scores.dtype if scores.is_floating_point() else s.dtype)
        pos = s.masked_fill(~positives, float("-inf")).amax(dim=1)
        neg = s.masked_fill(positives, float("-inf"))
        rank = (neg >= (pos - tol)[:, None]).sum(dim=1) + (torch.isnan(neg) & ~positives).sum(dim=1)
        return torch.where(torch.isfinite(pos), rank, torch.full_like(rank, s.shape[1]))


def _scale(model, logit_scale) -> torch.Tensor | float:
    return model.logit_scale.detach() if logit_scale is None else logit_scale


def _check_pos(positives: torch.Tensor, n: int) -> torch.Tensor:
    positives = torch.as_tensor(positives)
    if positives.dtype != torch.bool or positives.dim() != 2 or positives.shape[1] != n:
        raise AdvloraError(f"positives must be a bool tensor (B, {n}); got {positives.dtype} "
                           f"{tuple(positives.shape)}")
    if not positives.any(dim=1).all():
        raise AdvloraError("every image needs at least one positive caption")
    return positives


def contrastive(model, text_features: torch.Tensor, positives: torch.Tensor,
                logit_scale: float | torch.Tensor | None = None,
                clean_features: torch.Tensor | None = None) -> Objective:
    """Multi-positive cross-entropy of each image against ``text_features``.

    Args:
        model: a ``VLModel``.
        text_features: (N, D) unit caption embeddings: the full gallery, or the captions of the batch.
        positives: bool (B, N), ``positives[b, j]`` when caption j describes image b (rows follow the batch).
        logit_scale: temperature multiplier; None -> the model's own.
        clean_features: (B, D) unit embeddings of the clean images, when already computed: the clean image's
            outcome is then known without a forward.
    """
    tf = text_features.detach()
    positives = _check_pos(positives, tf.shape[0]).to(tf.device)
    scale = _scale(model, logit_scale)

    def score_of(positives: torch.Tensor):
        def score(feats: torch.Tensor):
            logits = scale * feats @ tf.t()
            pos = positives[:logits.shape[0]]
            return multi_positive_ce(logits, pos), logits, pos
        return score

    return _gallery_objective(model, score_of, positives, clean_features, tf)


def _gallery_objective(model, score_of, positives: torch.Tensor, clean_features: torch.Tensor | None,
                       tf: torch.Tensor) -> RankedObjective:
    """The ``RankedObjective`` of ``score_of(positives)(features)`` on ``model``'s image features, restrictable
    to rows of the batch (their positives' rows)."""
    def of(pos: torch.Tensor):
        score = score_of(pos)
        return lambda images: score(model.encode_image(images))

    clean = None if clean_features is None else _no_grad(score_of(positives), clean_features.to(tf))
    return RankedObjective(of(positives), clean, restrict=lambda rows: of(positives[rows.to(positives.device)]))


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


itc = contrastive


def kth_negative(sim: torch.Tensor, positives: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) each row's ``k``-th highest negative score (1 = the best negative); a row with fewer than ``k``
    negatives gets its lowest one. A positive ranks at ``k`` or beyond (under the pessimistic tie rule) exactly
    when this score is at least its own."""
    neg = sim.masked_fill(positives, float("-inf"))
    top = neg.topk(min(int(k), neg.shape[1]), dim=1).values
    n_neg = (~positives).sum(dim=1).clamp(1, top.shape[1])
    return top.gather(1, (n_neg - 1)[:, None].to(top.device)).squeeze(1)


def ranks_of(k) -> tuple[int, ...]:
    """The increasing ranks an objective aims at: ``k`` an integer >= 1, or a sequence of them."""
    ks = (k,) if isinstance(k, int) and not isinstance(k, bool) else tuple(k)
    if not ks or any(isinstance(j, bool) or int(j) != j or j < 1 for j in ks):
        raise AdvloraError(f"the objective's rank k must be an integer >= 1 or a sequence of them, got {k!r}")
    return tuple(sorted({int(j) for j in ks}))


def staged(sim: torch.Tensor, positives: torch.Tensor, ks: tuple[int, ...], value_at) -> torch.Tensor:
    """(B,) the objective of each row aimed at the lowest rank of ``ks`` it has not reached (the last one once
    all are): ``value_at(k)`` (B,), a loss that is >= 0 once the row is off R@k. With one rank, that value;
    with several, ``2 * stage + v / (1 + |v|)`` (stage: how many ranks below the aimed one are reached). Within
    a stage that is an increasing map of v, so APGD's sign steps and step-size control and Square's accept rule
    act as on v; at every rank reached it rises, so a search on it never gives back a rank it reached."""
    if len(ks) == 1:
        return value_at(ks[0])
    rank = best_positive_rank(sim, positives)
    stage = sum((rank >= j).long() for j in ks[:-1]).to(sim.device)                  # (B,) 0 .. len(ks) - 1
    v = torch.stack([value_at(j) for j in ks]).gather(0, stage[None]).squeeze(0)
    return 2 * stage.to(v.dtype) + v / (1 + v.abs())


def margin(model, text_features: torch.Tensor, positives: torch.Tensor,
           clean_features: torch.Tensor | None = None, k: int | tuple[int, ...] = 1) -> Objective:
    """The ``k``-th best negative minus the best positive cosine similarity (>= 0: the image's best caption
    ranks at ``k`` or beyond, off R@k); ``k`` several ranks: ``staged`` over them. The CW margin on cosine
    scores: it does not saturate as cross-entropy does; with the suite's ranks a black-box search on it
    aims at what makes an image done, not at rank 1 only (``k`` = 1: best negative minus best positive).
    ``clean_features``: as ``contrastive``'s."""
    return _scored("margin", model, text_features, positives, clean_features, k, margin_loss)


def margin_loss(sim: torch.Tensor, positives: torch.Tensor, k: int | tuple[int, ...] = 1) -> torch.Tensor:
    """(B,) ``margin``'s loss of scores ``sim`` (B, N): the ``k``-th best negative minus the best positive."""
    pos = sim.masked_fill(~positives, float("-inf")).amax(dim=1)
    return staged(sim, positives, ranks_of(k), lambda j: kth_negative(sim, positives, j) - pos)


def _scored(name: str, model, text_features: torch.Tensor, positives: torch.Tensor,
            clean_features: torch.Tensor | None, k, loss_at) -> RankedObjective:
    """The gallery objective of ``loss_at(cosine scores, positives, ks) -> (B,)``, a loss that needs a negative
    caption per image, aimed at the ranks ``k``."""
    tf = text_features.detach()
    positives = _check_pos(positives, tf.shape[0]).to(tf.device)
    if positives.all(dim=1).any():
        raise AdvloraError(f"{name} objective needs at least one negative caption per image")
    ks = ranks_of(k)

    def score_of(positives: torch.Tensor):
        def score(feats: torch.Tensor):
            sim = feats @ tf.t()
            return loss_at(sim, positives, ks), sim, positives
        return score

    return _gallery_objective(model, score_of, positives, clean_features, tf)


def dlr(model, text_features: torch.Tensor, positives: torch.Tensor,
        clean_features: torch.Tensor | None = None, k: int | tuple[int, ...] = 1) -> Objective:
    """AutoAttack's untargeted DLR loss (arXiv 2003.01690) on a caption gallery, aimed at rank ``k``
    (``dlr_loss``); ``k`` several ranks: ``staged`` over them. Invariant to shifts and scalings of the scores
    (``margin`` to shifts only). ``clean_features``: as ``contrastive``'s."""
    return _scored("dlr", model, text_features, positives, clean_features, k, dlr_loss)


def dlr_loss(sim: torch.Tensor, positives: torch.Tensor, k: int | tuple[int, ...] = 1) -> torch.Tensor:
    """(B,) the DLR loss of scores ``sim`` (B, N): ``(o_k - z_y) / (pi_1 - pi_3)``, z_y the best positive, o_j
    the j-th highest negative and pi the sorted ``[z_y, o_k, o_{k+1}, ...]`` (the image's own captions collapsed
    to the best one, the ``k - 1`` negatives the rank allows above it left out, as ``targeted_dlr``). ``k`` = 1
    with one caption per image: AutoAttack's ``-(z_y - max_{i != y} z_i) / (pi_1 - pi_3)``; >= 0 off R@k."""
    z_y = sim.masked_fill(~positives, float("-inf")).amax(dim=1)
    neg = sim.masked_fill(positives, float("-inf"))

    def at(j: int) -> torch.Tensor:
        o_j = kth_negative(sim, positives, j)                  # a row with fewer negatives: its lowest one
        after = neg.topk(min(j + 2, neg.shape[1]), dim=1).values[:, j:]          # o_{k+1}, o_{k+2}
        top = torch.cat([z_y[:, None], o_j[:, None], after], dim=1)
        top = top.topk(min(3, top.shape[1]), dim=1).values
        last = (top > float("-inf")).sum(dim=1).clamp_min(1) - 1   # a row with fewer scores: its lowest
        pi3 = top.gather(1, last.clamp(max=2)[:, None]).squeeze(1)
        return (o_j - z_y) / (top[:, 0] - pi3 + 1e-12)

    return staged(sim, positives, ranks_of(k), at)


class TargetedDLR:
    """A family of targeted, scale-invariant margin objectives (AutoAttack's targeted DLR, arXiv 2003.01690,
    adapted to a caption gallery with several captions per image and to rank ``k``), one per target.

    Rank ``k`` asks for ``k`` negatives above the image's best positive, the target among them. The ``k - 1``
    highest negatives other than the target may be any; what is left is AutoAttack's rank-1 problem on the
    rest. So, with z the cosine scores, z_y the best positive, z_t the target and o_j the j-th highest negative
    other than the target, the loss is ``(min(z_t, o_{k-1}) - z_y) / (pi_1 - (pi_3 + pi_4) / 2)`` where pi sorts
    ``[z_y, z_t, o_k, o_{k+1}, ...]``: the image's own captions collapsed to the best one (else with five
    captions per image pi_3 and pi_4 are often its own and the gradient raises z_y), the ``k - 1`` free
    negatives left out (``targeted_dlr``). >= 0 means the target and ``k - 1`` others outrank every positive
    (rank >= k); ``k`` = 1 is AutoAttack's ``(z_t - z_y) / (pi_1 - (pi_3 + pi_4) / 2)``, exactly so with one
    caption per image. ``k`` several ranks: ``staged`` over them (the target, once above the positive, stays
    required among the top k of the next rank).

    The targets of an image are its highest clean negatives below its clean best positive (a negative already
    above it needs no attack; AutoAttack's top classes other than the true one), the lowest negatives where
    fewer remain. ``n_targets`` is how many targets exist (at most the number of negatives). The ``last_rank``
    of each objective is the untargeted outcome (rank of the best positive among all scores), so the worst
    case over targets is kept by outcome.
    """

    def __init__(self, model, text_features: torch.Tensor, positives: torch.Tensor, clean_images: torch.Tensor,
                 n_targets: int = 9, k: int | tuple[int, ...] = 1) -> None:
        self.model = model
        self.tf = text_features.detach()
        self.positives = _check_pos(positives, self.tf.shape[0]).to(self.tf.device)
        with torch.no_grad():
            sim = model.encode_image(clean_images) @ self.tf.t()
        self.clean_sim = sim
        n_neg = int((~self.positives).sum(dim=1).min())
        self.n_targets = max(0, min(int(n_targets), n_neg))
        #: the ranks aimed at, at most the number of negatives every image has
        self.ks = ranks_of([min(j, max(n_neg, 1)) for j in ranks_of(k)])
        self.targets = _targets_below(sim, self.positives, self.n_targets) if self.n_targets else None

    def target(self, j: int) -> RankedObjective:
        """The objective towards each image's ``j``-th target (its clean outcome known, from the clean scores)."""
        if not 0 <= j < self.n_targets:
            raise AdvloraError(f"target {j} out of range: {self.n_targets} targets")
        return self._objective(self.targets[:, j], self.positives, self.clean_sim)

    def targets_of(self, js) -> RankedObjective:
        """All targets ``js`` at once, for images repeated target-major: row ``a * B + b`` is image ``b`` towards
        its target ``js[a]`` (APGD-T's targets as a batch dimension)."""
        js = list(js)
        t = torch.cat([self.targets[:, j] for j in js])
        return self._objective(t, self.positives.repeat(len(js), 1), self.clean_sim.repeat(len(js), 1))

    def _objective(self, t: torch.Tensor, positives: torch.Tensor, clean_sim: torch.Tensor | None = None
                   ) -> RankedObjective:
        tf, model, ks = self.tf, self.model, self.ks

        def score(sim: torch.Tensor):
            tt = t.to(sim.device)
            return staged(sim, positives, ks, lambda k: targeted_dlr(sim, positives, tt, k)), sim, positives

        def restrict(rows: torch.Tensor):
            r = rows.to(positives.device)
            return self._objective(t[r], positives[r]).fn

        return RankedObjective(lambda images: score(model.encode_image(images) @ tf.t()),
                               None if clean_sim is None else _no_grad(score, clean_sim), restrict=restrict)


def targeted_dlr(sim: torch.Tensor, positives: torch.Tensor, t: torch.Tensor, k: int = 1) -> torch.Tensor:
    """(B,) ``TargetedDLR``'s loss of scores ``sim`` (B, N) towards targets ``t`` (B,) at rank ``k``: the
    targeted margin over the scores with the positives collapsed to the best one and the ``k - 1`` highest
    other negatives left out of the denominator (see ``TargetedDLR``)."""
    rows = torch.arange(sim.shape[0], device=sim.device)
    z_y = sim.masked_fill(~positives, float("-inf")).amax(dim=1)
    z_t = sim[rows, t]
    others = sim.masked_fill(positives, float("-inf")).index_put((rows, t), torch.tensor(float("-inf")).to(sim))
    o = others.topk(min(k + 2, sim.shape[1]), dim=1).values            # o_1 .. o_{k+2}
    reach = torch.minimum(z_t, o[:, k - 2]) if k > 1 else z_t
    v = torch.cat([z_y[:, None], z_t[:, None], o[:, k - 1:]], dim=1)    # [z_y, z_t, o_k, o_{k+1}, o_{k+2}]
    top = v.topk(min(4, v.shape[1]), dim=1).values
    last = (top > float("-inf")).sum(dim=1).clamp_min(1) - 1           # a row with fewer scores: its lowest
    pi3 = top.gather(1, last.clamp(max=2)[:, None]).squeeze(1)
    pi4 = top.gather(1, last.clamp(max=3)[:, None]).squeeze(1)
    return (reach - z_y) / (top[:, 0] - (pi3 + pi4) / 2 + 1e-12)


def _targets_below(sim: torch.Tensor, positives: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) per image the ``n`` highest negatives of ``sim`` below its best positive (ties count above, as in
    ``best_positive_rank``), the lowest ``n`` negatives where fewer remain."""
    order = sim.masked_fill(positives, float("-inf")).argsort(dim=1, descending=True)
    n_neg = (~positives).sum(dim=1)
    start = torch.minimum(best_positive_rank(sim, positives).to(n_neg.device), n_neg - n)
    cols = start[:, None] + torch.arange(n, device=n_neg.device)[None]
    return order.gather(1, cols.to(order.device))


def embedding(model, clean_features: torch.Tensor, normalize: bool = False) -> Objective:
    """Squared l2 distance of ``model.encode_image(x, normalize)`` to ``clean_features`` (B, D): FARE's
    unsupervised attack (arXiv 2402.12336), computed on unnormalised embeddings by default as FARE does."""
    cf = clean_features.detach()

    def objective(images: torch.Tensor) -> torch.Tensor:
        return (model.encode_image(images, normalize=normalize) - cf[:images.shape[0]]).pow(2).sum(dim=-1)

    objective.stationary = True   # zero at the clean image, with zero gradient: attacks start off it
    return objective


def _need_itm(model) -> None:
    if not getattr(model, "has_itm", False):
        raise AdvloraError(f"the ITM objectives need a model with an ITM head (BLIP); {model.arch!r} has none")


def itm(model, captions: Sequence[Sequence[str]] | Sequence[str]) -> Objective:
    """Negative ITM match logit of each image with its own captions (averaged over them).

    ``captions[b]``: the caption (str) or captions (list of str) of image b.
    """
    _need_itm(model)
    groups = [[c] if isinstance(c, str) else list(c) for c in captions]
    owner = torch.tensor([b for b, g in enumerate(groups) for _ in g], dtype=torch.long)
    flat = [c for g in groups for c in g]
    tokens = model.tokenize(flat)

    def objective(images: torch.Tensor) -> torch.Tensor:
        states = model.image_states(images)
        o = owner.to(states.device)
        logits = model.itm_logits_from_states(states[o], tokens)[:, 1]
        total = torch.zeros(images.shape[0], device=logits.device).index_add(0, o, logits)
        count = torch.zeros(images.shape[0], device=logits.device).index_add(0, o, torch.ones_like(logits))
        return -total / count

    return objective


def rerank(model, clean_images: torch.Tensor, text_features: torch.Tensor, positives: torch.Tensor,
           captions: Sequence[str], k: int = 16) -> Objective:
    """Cross-entropy through BLIP's two-stage retrieval (ITC top-k, then ITM + ITC re-scoring).

    The candidate set of each image is fixed from the clean ranking: its top-``k`` captions by ITC plus all its
    positives (differentiable; a discrete top-k of the adversarial iterate would not be). Each candidate is
    scored ``itm_match + itc`` as ``advlora.evaluation.itm_rerank`` does, and the loss is the multi-positive
    cross-entropy over the candidates. Costs B * (k + positives) ITM passes per call.
    """
    _need_itm(model)
    tf = text_features.detach()
    positives = _check_pos(positives, tf.shape[0]).to(tf.device)
    with torch.no_grad():
        sim = model.encode_image(clean_images) @ tf.t()
    top = sim.topk(min(k, tf.shape[0]), dim=1).indices
    cand = torch.zeros_like(positives).scatter_(1, top, True) | positives
    rows, cols = cand.nonzero(as_tuple=True)
    tokens = model.tokenize([captions[j] for j in cols.tolist()])

    def objective(images: torch.Tensor):
        states = model.image_states(images)
        feats = model.embed_image_states(states)
        itc_s = (feats[rows] * tf[cols]).sum(-1)
        itm_s = model.itm_logits_from_states(states[rows], tokens)[:, 1]
        logits = torch.full(cand.shape, float("-inf"), device=feats.device, dtype=itc_s.dtype)
        logits = logits.index_put((rows, cols), itm_s + itc_s)
        # ITM logits are on their own scale, as LAVIS adds them; the rank is among the fixed candidates
        return multi_positive_ce(logits, positives), logits, positives

    return RankedObjective(objective)


def text_contrastive(model, image_features: torch.Tensor, txt2img: torch.Tensor,
                     logit_scale: float | torch.Tensor | None = None) -> TextObjective:
    """Cross-entropy of captions against an image gallery: ``objective(texts, rows) -> Tensor[len(texts)]``,
    where ``rows[i]`` is the caption index (into ``txt2img``) that ``texts[i]`` is a version of."""
    imf = image_features.detach()
    txt2img = torch.as_tensor(txt2img, dtype=torch.long)
    scale = _scale(model, logit_scale)

    def objective(texts: list, rows: torch.Tensor) -> torch.Tensor:
        logits = scale * model.encode_text(list(texts)) @ imf.t()
        target = txt2img[torch.as_tensor(rows, dtype=torch.long)].to(logits.device)
        return F.cross_entropy(logits, target, reduction="none")

    return objective


#: the losses a white-box attack can maximise on a caption gallery, ``loss(cosine scores (B, N), positives,
#: logit scale) -> (B,)``: cross-entropy, the CW margin and DLR (the evaluation's ``--objective``, training's
#: ``attack.attack_loss``)
LOSSES = {
    "contrastive": lambda sim, positives, scale: multi_positive_ce(scale * sim, positives),
    "margin": lambda sim, positives, scale: margin_loss(sim, positives),
    "dlr": lambda sim, positives, scale: dlr_loss(sim, positives),
}

#: image-side objective names usable from the CLI and ``evaluate_robust``
OBJECTIVES = ("contrastive", "itc", "margin", "dlr", "embedding", "itm", "rerank")
#: objectives an attack can fix in its declaration beside those (``apgd-t``: the targeted DLR objective)
TARGETED_OBJECTIVES = ("dlr-targeted",)


def check_objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise choices_error("objective", name, OBJECTIVES)
    return name


def check_loss(name: str, what: str = "attack loss") -> str:
    """``name`` if it is one of ``LOSSES``, else one error line listing them."""
    if name not in LOSSES:
        raise choices_error(what, name, tuple(LOSSES))
    return name
