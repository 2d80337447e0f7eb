"""Clean retrieval evaluation: encode, score (ITC, then ITM re-ranking for BLIP), and recall.

Runs under ``torch.inference_mode`` with the model in eval mode (restored afterwards).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from advlora.data.dataset import RetrievalDataset
from advlora.errors import AdvloraError
from advlora.evaluation.images import CleanImages, ImageSource, as_source
from advlora.metrics import retrieval_recall, retrieval_recall_features, set_tie_tolerance, tie_scale, tie_tolerance
from advlora.models.base import VLModel
from advlora.models.video import for_dataset
from advlora.runtime import eval_mode


def encode_images(model: VLModel, images: torch.Tensor | ImageSource, batch_size: int = 128) -> torch.Tensor:
    """(N, 3, H, W) pixels in [0, 1] (a tensor or an ``images.ImageSource``, read ``batch_size`` rows at a time)
    -> (N, D) unit embeddings, without gradient."""
    src = as_source(images)
    with torch.inference_mode(), eval_mode(model):
        return torch.cat([model.encode_image(x.to(model.device))
                          for _, x in src.batches(batch_size)]) if len(src) else torch.zeros(0)


def encode_texts(model: VLModel, captions: list[str], batch_size: int = 256) -> torch.Tensor:
    """N captions -> (N, D) unit embeddings, in batches, without gradient."""
    with torch.inference_mode(), eval_mode(model):
        return torch.cat([model.encode_text(captions[i:i + batch_size]) for i in range(0, len(captions), batch_size)])


def check_rerank_k(k: object, *, allow_default: bool = True) -> int | None:
    """``k`` as a re-rank depth: None or 0 (ITC only), a positive int, or -1 (the default, when allowed).

    Anything else (a negative other than -1, a float, a bool, a string) is an ``AdvloraError`` naming the value.
    """
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < (-1 if allow_default else 0):
        valid = ("-1 (the default), " if allow_default else "") + "0 (ITC only) or a positive int"
        raise AdvloraError(f"rerank_k must be {valid}; got {k!r}")
    return int(k)


@dataclass(frozen=True)
class Rerank:
    """How ``itm_rerank`` re-ranks: the depth ``k`` (>= 1: every query's top k by ITC are re-scored),
    ``batch_size`` images (and ITM pairs) at a time, ``t2i`` (False: the image-to-text direction only) and
    ``tie_tol``, the ITC tie tolerance to use instead of the one of the scores given (some rows of a larger set;
    None: ``itc_tolerance(sim, pairs)``). Validated when built."""

    k: int = 16
    batch_size: int = 64
    t2i: bool = True
    tie_tol: float | None = None

    def __post_init__(self) -> None:
        if not check_rerank_k(self.k, allow_default=False):
            raise AdvloraError(f"itm_rerank needs a re-rank depth k >= 1; got {self.k!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise AdvloraError(f"itm_rerank batch_size must be an integer >= 1, got {self.batch_size!r}")


def itm_rerank(model: VLModel, sim: torch.Tensor, images: torch.Tensor | ImageSource | None, captions: list[str],
               rerank: Rerank = Rerank(), *, txt2img: torch.Tensor | None = None,
               pairs: tuple[torch.Tensor, torch.Tensor] | None = None, states: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """BLIP's two-stage retrieval, as LAVIS evaluates it.

    For each image, its top-k captions by ITC (k: ``rerank.k``) are re-scored with ``itm + itc``; likewise for
    each caption and its top-k images. Returns (sim_i2t, sim_t2i), float64, in which every query's re-ranked
    candidates come first, in re-ranked order, and all its other candidates follow BELOW every re-ranked one
    with their ITC scores unchanged (exactly ``sim``'s values). Rank them with ``tie_dtype=sim.dtype`` and
    ``tie_tol=itc_tolerance(sim, pairs)`` (``advlora.metrics``): outside the re-ranked top k the ranks are
    then those of ``sim`` itself, ties included, so re-ranking the top k never moves R@j for j >= k; a
    positive outside the top k keeps its ITC place after the k, not a tie at rank k. Each query's re-ranked
    scores are scaled by one positive factor (the ITC tolerance over their own: ties among them are ties
    within their own rounding) and shifted above its largest finite ITC score. Non-finite scores stay
    non-finite (misses in ``advlora.metrics``). ``images`` (a tensor or an ``images.ImageSource``) are read
    ``rerank.batch_size`` at a time, and every pair of a batch's images (its top-k captions, and the captions that
    have it in their top k) is scored from that batch's states: the image states of the whole set are never
    held.

    ``pairs`` (rows, cols: the positive (image, caption) pairs of ``sim``; ``txt2img``: the image of each
    caption, the same as ``(txt2img, arange)``, where an entry outside ``sim``'s rows marks a caption of no
    row, a negative of all) makes the choice of the top k pessimistic, as the metrics rank: a positive is left
    out of the top k exactly when at least k negatives reach its ITC score less the tie tolerance (which of
    those negatives are re-ranked stays ``topk``'s choice). Without them, ``topk``'s order decides which of
    tied candidates are re-ranked. ``rerank.t2i=False``: the image-to-text direction only (the second is None).
    ``states``: the images' states (``model.image_states``), when already computed: ``images`` is not read.
    """
    k, batch_size, t2i, tie_tol = int(rerank.k), rerank.batch_size, rerank.t2i, rerank.tie_tol
    n_img, n_txt = sim.shape
    k_i2t, k_t2i = min(k, n_txt), (min(k, n_img) if t2i else 0)
    if pairs is None and txt2img is not None:
        pairs = _pairs_of(torch.as_tensor(txt2img, dtype=torch.long), n_img)
    tol = itc_tolerance(sim, pairs) if tie_tol is None else tie_tol
    key = sim if pairs is None else _selection_keys(sim, pairs, tol)
    top_j = key.topk(k_i2t, dim=1).indices                                       # (I, k): captions per image
    top_i = key.t().topk(k_t2i, dim=1).indices                                   # (T, k): images per caption
    top_vi, top_vt = sim.gather(1, top_j), sim.t().gather(1, top_i)
    t_img = top_i.flatten().cpu()
    t_cap = torch.arange(n_txt).repeat_interleave(k_t2i)
    by_image = torch.argsort(t_img, stable=True)                                 # t2i pairs grouped by image
    starts = torch.zeros(n_img + 1, dtype=torch.long)
    starts[1:] = torch.bincount(t_img, minlength=n_img).cumsum(0)
    i2t = torch.empty(n_img, k_i2t)
    t2i_s = torch.empty(n_txt * k_t2i)
    with torch.inference_mode(), eval_mode(model):
        for lo, hi, st in _state_batches(model, images, states, batch_size):   # one batch's states at a time
            pairs_b = torch.arange(hi - lo).repeat_interleave(k_i2t)
            i2t[lo:hi] = _itm_pairs(model, st, captions, pairs_b, top_j[lo:hi].flatten().cpu(),
                                    batch_size).view(hi - lo, k_i2t).cpu()
            sel = by_image[starts[lo]:starts[hi]]
            if len(sel):
                t2i_s[sel] = _itm_pairs(model, st, captions, t_img[sel] - lo, t_cap[sel], batch_size).cpu()
        sim_i2t = _two_stage(sim, top_j, i2t.to(sim) + top_vi, tol)
        sim_t2i = _two_stage(sim.t(), top_i, t2i_s.view(n_txt, k_t2i).to(sim) + top_vt, tol).t() if t2i else None
    return sim_i2t, sim_t2i


def _state_batches(model: VLModel, images, states: torch.Tensor | None, batch_size: int):
    """(lo, hi, states of images lo..hi-1), ``batch_size`` images at a time: from ``states`` when given, else
    computed from ``images`` batch by batch."""
    if states is not None:
        for lo in range(0, len(states), batch_size):
            yield lo, min(lo + batch_size, len(states)), states[lo:lo + batch_size]
        return
    for idx, x in as_source(images).batches(batch_size):
        yield int(idx[0]), int(idx[-1]) + 1, model.image_states(x.to(model.device))


def _pairs_of(txt2img: torch.Tensor, n_img: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive (row, caption) pairs of ``txt2img``; captions of no row (outside ``[0, n_img)``) have none."""
    cols = torch.arange(len(txt2img))
    mine = (txt2img >= 0) & (txt2img < n_img)
    return txt2img[mine], cols[mine]


def itc_tolerance(sim: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor] | None) -> float:
    """The tie tolerance the metrics give ITC scores ``sim`` whose positive pairs are ``pairs`` (rows, cols;
    None: from every score): the one to rank BLIP's two-stage scores with, so that they rank as ``sim`` does
    outside the re-ranked top k."""
    if pairs is None:
        return set_tie_tolerance(sim.flatten(), sim.dtype)
    rows, cols = (p.to(sim.device) for p in pairs)
    return set_tie_tolerance(sim[rows, cols], sim.dtype)


def _selection_keys(sim: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor], tol: float) -> torch.Tensor:
    """float64 ``sim`` with every positive pair set just below its metric threshold (its score less ``tol``,
    computed in ``sim``'s dtype as the metrics compute it), for choosing the top k: a negative that reaches the
    threshold (and so counts ahead of the positive) outranks it, one below it does not (a ``sim``-dtype value
    below the threshold is at most the value before it, and the key lies between the two)."""
    rows, cols = (p.to(sim.device) for p in pairs)
    thr = sim[rows, cols] - tol
    below = torch.nextafter(thr, torch.full_like(thr, float("-inf")))
    key = sim.double()
    key[rows, cols] = (thr.double() + below.double()) / 2
    return key


def _two_stage(itc: torch.Tensor, top: torch.Tensor, reranked: torch.Tensor, tol: float) -> torch.Tensor:
    """(Q, C) float64 scores: the ITC scores unchanged, and at columns ``top`` the re-ranked scores (Q, k), each
    row's scaled by ``tol`` over their own tie tolerance and shifted above its largest finite ITC score by more
    than ``tol``."""
    out = itc.double()
    rr = reranked.double()
    finite_rr = torch.isfinite(rr)
    own_tol = tie_tolerance(tie_scale(reranked, dim=1).double(), reranked.dtype)       # (Q,)
    factor = torch.where((own_tol > 0) & (tol > 0), tol / own_tol.clamp_min(1e-300), torch.ones_like(own_tol))
    rr = rr * factor[:, None]
    finite_max = torch.where(torch.isfinite(out), out, float("-inf")).amax(dim=1, keepdim=True)
    finite_min = torch.where(finite_rr, rr, float("inf")).amin(dim=1, keepdim=True)
    shift = torch.nan_to_num(finite_max - finite_min + max(1.0, 4 * tol), nan=0.0, posinf=0.0, neginf=0.0)
    return out.scatter_(1, top, rr + shift.clamp_min(0.0))


def _itm_pairs(model: VLModel, states: torch.Tensor, captions: list[str], img_idx: torch.Tensor,
               txt_idx: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = []
    for s in range(0, len(img_idx), batch_size):
        ii, jj = img_idx[s:s + batch_size], txt_idx[s:s + batch_size]
        logits = model.itm_logits_from_states(states[ii], [captions[j] for j in jj.tolist()])
        out.append(logits[:, 1])
    return torch.cat(out) if out else torch.zeros(0)


def retrieval_scores(model: VLModel, images: torch.Tensor | ImageSource, captions: list[str], *,
                     rerank_k: int | None = None, text_features: torch.Tensor | None = None, batch_size: int = 128,
                     txt2img: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sim_i2t, sim_t2i) for images against captions; equal unless BLIP re-ranks with ITM (``rerank_k``;
    ``txt2img``: as in ``itm_rerank``)."""
    rerank_k = check_rerank_k(rerank_k, allow_default=False)
    sim = _itc_scores(model, images, captions, text_features, batch_size)
    if rerank_k and model.has_itm:
        return itm_rerank(model, sim, images, captions, Rerank(rerank_k), txt2img=txt2img)
    return sim, sim


def _itc_scores(model: VLModel, images: torch.Tensor | ImageSource, captions: list[str],
                text_features: torch.Tensor | None, batch_size: int) -> torch.Tensor:
    img = encode_images(model, images, batch_size)
    txt = encode_texts(model, captions) if text_features is None else text_features
    return img @ txt.t()


#: LAVIS's ITM re-ranking depth (``k_test``) by test-set size: 128 on Flickr30K's 1k test images, 256 on
#: COCO's 5k; sets of at least ``COCO_SIZE`` images get the COCO depth.
LAVIS_RERANK_K = {"flickr": 128, "coco": 256}
COCO_SIZE = 5000


def default_rerank_k(model: VLModel, n_images: int | None = None) -> int | None:
    """The ITM re-ranking depth used when none is set: None (no re-ranking) for a model without ITM.

    BLIP gets LAVIS's depth for the data set's size: 256 (COCO 5k test) for ``n_images >= 5000``, else 128
    (Flickr30K 1k test, and every smaller set), never more than ``n_images``: on a small embedded set every image
    is then re-scored for each caption (t2i) and as many captions for each image (i2t), and the cost stays that of
    the set, not of LAVIS's galleries. ``n_images=None`` (size unknown): 128.
    """
    if not model.has_itm:
        return None
    k = LAVIS_RERANK_K["coco"] if n_images is not None and n_images >= COCO_SIZE else LAVIS_RERANK_K["flickr"]
    return k if n_images is None else max(1, min(k, n_images))


def evaluate_clean(model: VLModel, dataset: RetrievalDataset, *, batch_size: int = 128,
                   rerank_k: int | None = -1) -> dict[str, float]:
    """Clean Recall@1/5/10 both ways and r_mean on ``dataset`` (``rerank_k=-1``: the backend's default)."""
    rerank_k = check_rerank_k(rerank_k)
    model = for_dataset(model, dataset)  # video sets: frame pooling, same contract
    images = CleanImages(dataset.load_images_uint8(model.image_size))   # floats per batch, never the whole set
    k = default_rerank_k(model, len(images)) if rerank_k == -1 else rerank_k
    if not (k and model.has_itm):  # single-stage: the fused path never holds the full similarity matrix
        return retrieval_recall_features(encode_images(model, images, batch_size),
                                         encode_texts(model, dataset.captions), dataset.txt2img)
    sim = _itc_scores(model, images, dataset.captions, None, batch_size)
    sim_i2t, sim_t2i = itm_rerank(model, sim, images, dataset.captions, Rerank(k), txt2img=dataset.txt2img)
    return retrieval_recall(sim_i2t, dataset.txt2img, sim_t2i=sim_t2i, tie_dtype=sim.dtype,
                            tie_tol=itc_tolerance(sim, _pairs_of(dataset.txt2img, len(images))))
