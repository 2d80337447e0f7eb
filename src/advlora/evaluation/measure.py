"""What every attack's numbers are measured with: the evaluation context (the clean set, its caption
features, its clean ranks) and ``measure``, the metrics and per-sample ranks of a set of images and captions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from advlora.attacks import objectives as O
from advlora.data.dataset import RetrievalDataset
from advlora.evaluation import distributed
from advlora.evaluation.images import CleanImages, ImageSource
from advlora.evaluation.results import FEATURE_BATCH, ITM_BATCH
from advlora.evaluation.retrieval import Rerank, encode_images, encode_texts, itc_tolerance, itm_rerank
from advlora.evaluation.tasks import task_of
from advlora.runtime import eval_mode


@dataclass
class Ctx:
    """One evaluation's fixed part: the model, the set, its clean images (uint8, floats per batch), the clean
    caption features, the re-rank depth, and, once measured, the clean metrics, ranks, losses and image
    features."""

    model: object
    data: RetrievalDataset
    images: ImageSource                   # the clean set: uint8 pixels, floats one batch at a time
    text_features: torch.Tensor
    rerank_k: int | None
    clean_ranks: tuple[torch.Tensor, torch.Tensor] = None
    clean: dict = None
    clean_loss: torch.Tensor = None
    clean_features: torch.Tensor = None
    #: the logits the cross-entropy objective attacks are this x cosine (None: the model's own logit scale); a
    #: protocol that fixes them (``robustvlm``: 100) sets it
    logit_scale: float | None = None


def scores(model, img_feats, txt_feats, images, captions, k, pairs=None, *, t2i: bool = True
           ) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
    """(i2t, t2i, tie_tol) scores: ITC, re-ranked by ITM on the top ``k`` for a model with an ITM head, with the
    tie tolerance to rank them with (that of the ITC scores, ``retrieval.itc_tolerance``; None: the metrics'
    own). ``pairs``: the positive (row, caption) pairs, for the pessimistic choice of the top k
    (``retrieval.itm_rerank``); ``t2i=False``: the image-to-text direction only."""
    sim = img_feats @ txt_feats.t()
    if k and model.has_itm:
        s_i2t, s_t2i = itm_rerank(model, sim, images, captions, Rerank(k, ITM_BATCH, t2i), pairs=pairs)
        return s_i2t, s_t2i, itc_tolerance(sim, pairs)
    return sim, sim, None


def _pairs(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (row, caption) pairs of a positives mask (``positives``)."""
    rows, cols = pos.nonzero(as_tuple=True)
    return rows.cpu(), cols.cpu()


def positives(data: RetrievalDataset, idx: torch.Tensor) -> torch.Tensor:
    """(len(idx), T) bool: text j is a positive of image ``idx[b]`` (its caption, or its class)."""
    return task_of(data).positives(data, idx)


def tie_dtype(img_feats: torch.Tensor, txt_feats: torch.Tensor) -> torch.dtype:
    """The precision whose rounding decides ties (BLIP's float64 two-stage scores hold ITC-precision values)."""
    return torch.promote_types(img_feats.dtype, txt_feats.dtype)


def measure(ctx: Ctx, images: ImageSource, captions: list[str] | None = None) -> dict:
    """Metrics and ranks of (images, captions); clean captions/features when ``captions`` is None. The images
    are encoded ``FEATURE_BATCH`` at a time; only their features (N, D) are held."""
    model, data = ctx.model, ctx.data
    tf = ctx.text_features if captions is None else encode_texts(model, captions).clone()
    caps = data.captions if captions is None else captions
    imf = _encode(model, images)
    pos = positives(data, torch.arange(len(data)))
    s_i2t, s_t2i, tol = scores(model, imf, tf, images, caps, ctx.rerank_k, _pairs(pos))
    prec, task = tie_dtype(imf, tf), task_of(data)
    ranks = task.ranks(data, s_i2t, s_t2i, tie_dtype=prec, tie_tol=tol)
    metrics = task.metrics(data, s_i2t, s_t2i, tie_dtype=prec, tie_tol=tol)
    loss = O.multi_positive_ce(s_i2t, pos.to(s_i2t.device))
    return {"metrics": metrics, "ranks": ranks, "loss": loss, "features": imf}


def measure_i2t(ctx: Ctx, images: ImageSource, indices: torch.Tensor) -> dict:
    """Per image of a subset (``images`` holds the rows of images ``indices``): its i2t rank against the clean
    caption gallery, its contrastive loss and its features; each is a function of the image alone, so it equals
    what ``measure`` gives that image within the whole set."""
    model, data = ctx.model, ctx.data
    indices = torch.as_tensor(indices, dtype=torch.long)
    if not len(indices):
        return {"rank": torch.zeros(0, dtype=torch.long), "loss": torch.zeros(0),
                "features": ctx.text_features.new_zeros((0, ctx.text_features.shape[1]))}
    imf = _encode(model, images)
    pos = positives(data, indices)                     # the subset's rows: its captions, or its classes
    s_i2t, _, tol = scores(model, imf, ctx.text_features, images, data.captions, ctx.rerank_k, _pairs(pos),
                           t2i=False)
    rank = task_of(data).subset_i2t_ranks(data, s_i2t, indices, tie_dtype=tie_dtype(imf, ctx.text_features),
                                          tie_tol=tol)
    loss = O.multi_positive_ce(s_i2t, pos.to(s_i2t.device))
    return {"rank": rank.cpu(), "loss": loss.detach().float().cpu(), "features": imf}


def reported_i2t_rank(ctx: Ctx, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(B,) the i2t rank the metrics report for images ``x`` (B, ...) (those of ``indices``; an image may come
    several times, as APGD-T's targets) against the clean caption gallery: the two-stage rank on a model that
    re-ranks by ITM, as ``measure_i2t`` reads it, in this process alone and without gradient. Only the images
    whose ITC rank is below the re-rank depth are re-scored by ITM: beyond it the two-stage rank is the ITC rank
    (``retrieval.itm_rerank``). The attacks' outcome on such a model (``attacks.stopping.report_rank``)."""
    model, data = ctx.model, ctx.data
    indices = torch.as_tensor(indices, dtype=torch.long).cpu()
    k = ctx.rerank_k if model.has_itm else None
    states = None
    if k:                               # one pass of the vision tower: the features, and the states ITM reads
        with torch.inference_mode(), eval_mode(model):
            states = model.image_states(x.to(model.device))
            imf = model.embed_image_states(states)
    else:
        imf = encode_images(model, x, FEATURE_BATCH)
    sim = imf @ ctx.text_features.t()
    pos = positives(data, indices)
    prec = tie_dtype(imf, ctx.text_features)
    tol = itc_tolerance(sim, _pairs(pos)) if k else None
    rank = _ranks_of(data, sim, indices, prec, tol)
    need = (rank < k).nonzero().squeeze(1) if k else rank[:0]
    if len(need):
        s_i2t, _ = itm_rerank(model, sim[need.to(sim.device)], None, data.captions,
                              Rerank(k, ITM_BATCH, t2i=False, tie_tol=tol), pairs=_pairs(pos[need]),
                              states=states[need.to(states.device)])
        rank[need] = _ranks_of(data, s_i2t, indices[need], prec, tol)
    return rank


def _ranks_of(data: RetrievalDataset, s_i2t: torch.Tensor, indices: torch.Tensor, prec: torch.dtype,
              tol: float | None) -> torch.Tensor:
    """``subset_i2t_ranks`` of rows whose images may repeat: one pass per occurrence, each image once in it."""
    seen = torch.zeros(int(indices.max()) + 1 if len(indices) else 0, dtype=torch.long)
    nth = torch.empty_like(indices)
    for r, i in enumerate(indices.tolist()):           # a batch's rows: the loop is over B, not the set
        nth[r] = seen[i]
        seen[i] += 1
    rank = torch.empty(len(indices), dtype=torch.long)
    task = task_of(data)
    for level in range(int(nth.max()) + 1 if len(nth) else 0):
        rows = (nth == level).nonzero().squeeze(1)
        rank[rows] = task.subset_i2t_ranks(data, s_i2t[rows.to(s_i2t.device)], indices[rows], tie_dtype=prec,
                                           tie_tol=tol).cpu()
    return rank


def _encode(model, images: ImageSource) -> torch.Tensor:
    """Features of ``images``, ``FEATURE_BATCH`` at a time; split across the processes of a distributed session."""
    return distributed.current().encode(lambda src: encode_images(model, src, FEATURE_BATCH), images)


def context(model, dataset: RetrievalDataset, k, logit_scale: float | None = None) -> Ctx:
    """The context of ``dataset``: its clean images and caption features, measured clean (``logit_scale``: the
    attacks' fixed logit scale, ``Ctx.logit_scale``)."""
    images = CleanImages(dataset.load_images_uint8(model.image_size))   # floats per batch, never the whole set
    tf = encode_texts(model, dataset.captions).clone()   # a normal tensor: usable inside autograd graphs
    ctx = Ctx(model, dataset, images, tf, k, logit_scale=logit_scale)
    res = measure(ctx, images)
    ctx.clean, ctx.clean_ranks = res["metrics"], res["ranks"]
    ctx.clean_loss, ctx.clean_features = res["loss"].detach().float().cpu(), res["features"]
    return ctx


__all__ = ["Ctx", "context", "measure", "measure_i2t", "positives", "reported_i2t_rank", "scores"]
