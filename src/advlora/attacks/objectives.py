"""Retrieval objectives for the attacks: builders returning ``objective(images) -> Tensor[B]`` to maximise.

Image side (the query image attacks the caption gallery):
- ``contrastive`` / ``itc``: multi-positive cross-entropy of each image against a caption gallery or a batch
  (CLIP's InfoNCE with every caption of the image as a positive); the APGD paper's "CE" (arXiv 2003.01690).
- ``margin``: best negative minus best positive cosine similarity (a DLR-like margin, arXiv 2003.01690).
- ``TargetedDLR``: targeted scale-invariant margins towards the top clean negatives (APGD-T's objectives).
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


def margin(model, text_features: torch.Tensor, positives: torch.Tensor,
           clean_features: torch.Tensor | None = None) -> Objective:
    """Best negative minus best positive cosine similarity (> 0: the image no longer retrieves a caption of its
    own at rank 1). A DLR-like margin: scale-free, so it does not saturate as cross-entropy does.
    ``clean_features``: as ``contrastive``'s."""
    tf = text_features.detach()
    positives = _check_pos(positives, tf.shape[0]).to(tf.device)
    if positives.all(dim=1).any():
        raise AdvloraError("margin objective needs at least one negative caption per image")

    def score_of(positives: torch.Tensor):
        def score(feats: torch.Tensor):
            sim = feats @ tf.t()
            pos = sim.masked_fill(~positives, float("-inf")).amax(dim=1)
            neg = sim.masked_fill(positives, float("-inf")).amax(dim=1)
            return neg - pos, sim, positives
        return score

    return _gallery_objective(model, score_of, positives, clean_features, tf)


class TargetedDLR:
    """A family of targeted, scale-invariant margin objectives (AutoAttack's targeted DLR, arXiv 2003.01690,
    adapted to a caption gallery), one per target: the ``j``-th highest-scoring negative caption of each image
    at the clean image.

    ``target(j)`` is ``objective(images) -> (z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` with z the cosine
    scores against the gallery, z_y the best positive, z_t the target and z_pi the sorted scores (DLR's
    denominator makes it invariant to the scale of the scores); > 0 means the target outranks every positive.
    Its ``last_rank`` is the untargeted outcome (rank of the best positive), so the worst case over targets is
    kept by outcome. ``n_targets`` is how many targets exist (at most the number of negatives).
    """

    def __init__(self, model, text_features: torch.Tensor, positives: torch.Tensor, clean_images: torch.Tensor,
                 n_targets: int = 9) -> None:
        self.model = model
        self.tf = text_features.detach()
        self.positives = _check_pos(positives, self.tf.shape[0]).to(self.tf.device)
        with torch.no_grad():
            sim = model.encode_image(clean_images) @ self.tf.t()
        self.clean_sim = sim
        n_neg = int((~self.positives).sum(dim=1).min())
        self.n_targets = max(0, min(int(n_targets), n_neg))
        neg = sim.masked_fill(self.positives, float("-inf"))
        self.targets = neg.topk(self.n_targets, dim=1).indices if self.n_targets else None   # (B, T)

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
        tf, model = self.tf, self.model

        def score(sim: torch.Tensor):
            rows = torch.arange(sim.shape[0], device=sim.device)
            z_y = sim.masked_fill(~positives, float("-inf")).amax(dim=1)
            z_t = sim[rows, t.to(sim.device)]
            top = sim.topk(min(4, sim.shape[1]), dim=1).values
            denom = top[:, 0] - (top[:, min(2, top.shape[1] - 1)] + top[:, -1]) / 2
            return (z_t - z_y) / (denom + 1e-12), sim, positives

        def restrict(rows: torch.Tensor):
            r = rows.to(positives.device)
            return self._objective(t[r], positives[r]).fn

        return RankedObjective(lambda images: score(model.encode_image(images) @ tf.t()),
                               None if clean_sim is None else _no_grad(score, clean_sim), restrict=restrict)


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


#: image-side objective names usable from the CLI and ``evaluate_robust``
OBJECTIVES = ("contrastive", "itc", "margin", "embedding", "itm", "rerank")
#: objectives an attack can fix in its declaration beside those (``apgd-t``: the targeted DLR family)
FAMILIES = ("dlr-targeted",)


def check_objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise choices_error("objective", name, OBJECTIVES)
    return name
