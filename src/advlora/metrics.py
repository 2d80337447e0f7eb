"""Retrieval metrics as pure functions of a similarity matrix.

Definitions (the CLIP / LAVIS convention):
- image-to-text R@k: share of images for which *any* of its captions ranks in the top k captions;
- text-to-image R@k: share of captions whose image ranks in the top k images;
- ``r_mean``: the mean of the six recalls.

Ranks are pessimistic, so that a degenerate model can never look good:
- a positive's rank counts every negative scoring ``>=`` it less the tie tolerance (``tie_tolerance``): a tie
  between a positive and a negative goes AGAINST the query (an all-equal matrix, or a collapsed image tower,
  scores at or below chance, not 100), and two computations of one dot product that differ in their last bits
  (another matrix kernel for another tile shape, thread count or CPU) are still a tie;
- a non-finite score is a miss: a positive scoring NaN or +-inf cannot be found (an image whose positives are all
  non-finite, or without captions, and a caption whose own score is non-finite get the rank ``n_candidates``,
  one past the last real place, which no R@k counts), and a negative scoring NaN or +-inf counts as ahead of the
  positives. ``retrieval_recall`` and ``retrieval_recall_features`` report the number of non-finite scores they
  met under the key ``"nonfinite"`` whenever it is not zero (finite inputs give exactly the keys of
  ``METRIC_KEYS``).
Everything is computed in chunks of rows: a 5k x 25k problem never materialises a full matrix of ranks.
"""
from __future__ import annotations

import torch

METRIC_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "r_mean")
NONFINITE_KEY = "nonfinite"

#: the tie tolerance in machine epsilons of the accumulation (float32 at least) times the scale of the scores
TIE_ULPS_ACCUMULATION = 16
#: ... plus this many epsilons of the scores' own dtype (its rounding of each result)
TIE_ULPS_OUTPUT = 2


def tie_scale(scores: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """The largest ``|score|`` among the finite ``scores`` (over ``dim``, or all of them), 0 where none is finite.

    The retrieval metrics take it over the positive pairs of the whole set: every path (the matrix, the tiles of
    the feature path whatever their shape) computes those same scores, identical up to their last bits, so the
    tolerance is the same in every path; it does not depend on a tile's content.
    """
    mag = torch.where(torch.isfinite(scores), scores.abs(), torch.zeros((), dtype=scores.dtype,
                                                                         device=scores.device))
    if dim is None:
        return mag.amax() if mag.numel() else torch.zeros((), dtype=scores.dtype, device=scores.device)
    return mag.amax(dim=dim) if mag.shape[dim] else mag.sum(dim=dim)


def tie_tolerance(scale: torch.Tensor | float, dtype: torch.dtype) -> torch.Tensor | float:
    """How far below a positive's score a negative still ties with it (and so counts against the query).

    ``scale * (TIE_ULPS_ACCUMULATION * eps(acc) + TIE_ULPS_OUTPUT * eps(dtype))``, ``acc`` being ``dtype``
    promoted to at least float32 (torch's CPU and GPU kernels accumulate dot products in float32 or wider) and
    ``scale`` the magnitude of the scores (``tie_scale``). Why these numbers: two kernels' results of one
    dot product of length D differ by a few ``eps(acc) * sum_k |a_k b_k|``; a tie is two such results, and 16 eps
    of the scale covers them while the largest positive score is at least a fifth of ``|a| |b|`` (unit features of
    a trained model). Each result is then rounded to the scores' dtype, half an eps of it at most, so two results
    of a float16 or bfloat16 product differ by up to one eps of that dtype: ``TIE_ULPS_OUTPUT`` = 2. The
    measurements behind these bounds: docs/performance.md, "Tie tolerance".
    """
    acc = torch.promote_types(dtype, torch.float32)
    return scale * (TIE_ULPS_ACCUMULATION * torch.finfo(acc).eps + TIE_ULPS_OUTPUT * torch.finfo(dtype).eps)


def set_tie_tolerance(positives: torch.Tensor, dtype: torch.dtype | None = None) -> float:
    """The tie tolerance of a whole set, from its positive pairs' scores (one value for every query of either
    direction); ``dtype``: the dtype the scores were computed in (default: theirs)."""
    return float(tie_tolerance(tie_scale(positives).double(), dtype or positives.dtype))


def _threshold(best: torch.Tensor, tol: float, tie_dtype: torch.dtype | None) -> torch.Tensor:
    """``best - tol``: what a candidate must reach to count ahead of a positive scoring ``best``.

    Scores carried in a wider dtype than they were computed in (``tie_dtype``: BLIP's float64 two-stage
    scores, whose ITC part holds float32 values) are thresholded as their own dtype thresholds them: a
    positive whose score is exactly a ``tie_dtype`` value gets the threshold computed in ``tie_dtype``, so
    that the same scores rank alike in either carrier (the two-stage order equals the ITC order outside the
    re-ranked top k, ties included); any other score (a re-ranked one) keeps the wide threshold.
    """
    if (tie_dtype is None or not best.is_floating_point()
            or torch.finfo(tie_dtype).bits >= torch.finfo(best.dtype).bits):
        return best - tol
    narrow = best.to(tie_dtype)
    exact = narrow.to(best.dtype) == best
    if not bool(exact.any()):
        return best - tol
    return torch.where(exact, (narrow - tol).to(best.dtype), best - tol)


def _positive_scores(sim: torch.Tensor, txt2img: torch.Tensor) -> torch.Tensor:
    """(n_texts,) score of each caption with its own image: one gather, no mask over the matrix."""
    return sim[txt2img, torch.arange(sim.shape[1], device=sim.device)]


def _ahead(scores: torch.Tensor, threshold: torch.Tensor, finite: bool = False) -> torch.Tensor:
    """Candidates counted ahead of a positive: scoring ``>= threshold`` (the positive's score less the tie
    tolerance), or non-finite themselves (``finite``: the caller knows every score is finite)."""
    mask = torch.ge(scores, threshold)
    if not finite:
        ok = torch.isfinite(scores)
        if not bool(ok.all()):
            mask |= ~ok
    return mask


def all_finite(sim: torch.Tensor) -> bool:
    """True when no entry of ``sim`` is NaN or +-inf (two reductions, no mask: NaN propagates through both)."""
    return not sim.numel() or bool(torch.isfinite(sim.amax()) & torch.isfinite(sim.amin()))


def _best_positive(pos: torch.Tensor, txt2img: torch.Tensor, n_img: int) -> torch.Tensor:
    """(n_img,) best finite positive score of each image; -inf for an image without one (then a miss)."""
    pos = torch.where(torch.isfinite(pos), pos, torch.full_like(pos, float("-inf")))
    best = torch.full((n_img,), float("-inf"), dtype=pos.dtype, device=pos.device)
    return best.scatter_reduce_(0, txt2img, pos, reduce="amax")


def i2t_ranks(sim: torch.Tensor, txt2img: torch.Tensor, chunk_size: int = 1024, *,
              finite: bool | None = None, tie_dtype: torch.dtype | None = None,
              tie_tol: float | None = None) -> torch.Tensor:
    """Rank (0 = first) of each image's best-ranked caption; ``sim`` is (n_images, n_texts).

    The rank is the number of negative captions scoring ``>=`` the image's best finite positive less the tie
    tolerance, or non-finite; ``n_texts`` (a miss) for an image without a finite positive. ``finite``: whether
    every score is finite, when the caller already knows (None: checked). ``tie_dtype``: the dtype the scores
    were computed in, for the tolerance (default ``sim.dtype``; BLIP's float64 two-stage scores hold float32
    values). ``tie_tol``: the tolerance itself, when the caller knows it (BLIP's two-stage scores: that of
    their ITC scores, ``evaluation.retrieval.itc_tolerance``); default: from the positives' scores.
    """
    n_img, n_txt = sim.shape
    finite = all_finite(sim) if finite is None else finite
    txt2img = txt2img.to(sim.device)
    pos = _positive_scores(sim, txt2img)
    tol = set_tie_tolerance(pos, tie_dtype) if tie_tol is None else tie_tol
    low = _threshold(_best_positive(pos, txt2img, n_img), tol, tie_dtype)
    ranks = torch.empty(n_img, dtype=torch.long, device=sim.device)
    for start in range(0, n_img, chunk_size):
        rows = sim[start:start + chunk_size]                                     # (c, T)
        thr = low[start:start + rows.shape[0], None]
        ranks[start:start + rows.shape[0]] = _ahead(rows, thr, finite).sum(dim=1)
    # the positives were counted too (their own best always, others when tied or non-finite): remove them
    ranks -= torch.bincount(txt2img[_ahead(pos, low[txt2img])], minlength=n_img)
    ranks[torch.isinf(low)] = n_txt  # no finite positive: never a hit
    return ranks


def t2i_ranks(sim: torch.Tensor, txt2img: torch.Tensor, chunk_size: int = 4096, *,
              finite: bool | None = None, tie_dtype: torch.dtype | None = None,
              tie_tol: float | None = None) -> torch.Tensor:
    """Rank (0 = first) of each caption's own image; ``sim`` is (n_images, n_texts).

    The rank is the number of other images scoring ``>=`` the caption's own image less the tie tolerance, or
    non-finite; ``n_images`` (a miss) when the own score is non-finite. ``finite``, ``tie_dtype``,
    ``tie_tol``: as in ``i2t_ranks``.
    """
    n_img, n_txt = sim.shape
    finite = all_finite(sim) if finite is None else finite
    txt2img = txt2img.to(sim.device)
    own = _positive_scores(sim, txt2img)                                         # (T,)
    low = _threshold(own, set_tie_tolerance(own, tie_dtype) if tie_tol is None else tie_tol, tie_dtype)
    ranks = torch.empty(n_txt, dtype=torch.long, device=sim.device)
    for start in range(0, n_txt, chunk_size):
        cols = sim[:, start:start + chunk_size]                                  # (I, c)
        ranks[start:start + cols.shape[1]] = _ahead(cols, low[start:start + cols.shape[1]], finite).sum(dim=0)
    ranks -= 1  # the own image, always counted (>= itself, or non-finite)
    ranks[~torch.isfinite(own)] = n_img
    return ranks


def recall_from_ranks(ranks: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10),
                      n_candidates: int | None = None) -> dict[int, float]:
    """Percentage of queries whose rank is below k, for each k.

    ``n_candidates``: the gallery size; a rank at or past it is a miss (the rank the rank functions give a
    query that cannot be found), also for a k larger than the gallery.
    """
    n = max(1, ranks.numel())
    hit_able = ranks < n_candidates if n_candidates is not None else torch.ones_like(ranks, dtype=torch.bool)
    return {k: 100.0 * int(((ranks < k) & hit_able).sum()) / n for k in ks}


def nonfinite_count(sim: torch.Tensor, chunk_size: int = 1024) -> int:
    """Number of NaN or +-inf entries of ``sim``, by chunks of rows."""
    if all_finite(sim):
        return 0
    return sum(int((~torch.isfinite(sim[s:s + chunk_size])).sum()) for s in range(0, sim.shape[0], chunk_size))


def _recalls(i2t: torch.Tensor, t2i: torch.Tensor, ks: tuple[int, ...], n_img: int, n_txt: int,
             nonfinite: int) -> dict[str, float]:
    out = {f"i2t_r{k}": v for k, v in recall_from_ranks(i2t, ks, n_txt).items()}
    out |= {f"t2i_r{k}": v for k, v in recall_from_ranks(t2i, ks, n_img).items()}
    out["r_mean"] = sum(out.values()) / len(out)
    if nonfinite:
        out[NONFINITE_KEY] = nonfinite
    return out


def retrieval_recall(sim: torch.Tensor, txt2img: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10),
                     chunk_size: int = 1024, sim_t2i: torch.Tensor | None = None, *,
                     tie_dtype: torch.dtype | None = None, tie_tol: float | None = None) -> dict[str, float]:
    """Recall@k in both directions and their mean, in percent (pessimistic ranks, see the module docstring).

    Args:
        sim: (n_images, n_texts) similarity scores.
        txt2img: (n_texts,) index of the image each caption describes.
        ks: cut-offs; ``r_mean`` averages over both directions and all ks.
        sim_t2i: a separate (n_images, n_texts) matrix for text-to-image, when the two directions are scored
            differently (BLIP's ITM re-ranking re-scores the top k of each query's own direction).
        tie_dtype: the dtype the scores were computed in, from which the tie tolerance is derived (default:
            ``sim``'s; BLIP's float64 two-stage scores hold float32 values).
        tie_tol: the tolerance itself, when known (``i2t_ranks``).

    Returns ``i2t_r{k}``, ``t2i_r{k}``, ``r_mean`` and, only when some scores were NaN or infinite,
    ``nonfinite``: their number (over both matrices when ``sim_t2i`` is a separate one).
    """
    txt2img = torch.as_tensor(txt2img, dtype=torch.long)
    if sim.dim() != 2 or txt2img.numel() != sim.shape[1]:
        raise ValueError(f"sim must be (n_images, n_texts) with one txt2img entry per text; got {tuple(sim.shape)} "
                         f"and {txt2img.numel()} entries")
    other = sim if sim_t2i is None else sim_t2i
    if other.shape != sim.shape:
        raise ValueError(f"sim_t2i must have the shape of sim {tuple(sim.shape)}; got {tuple(other.shape)}")
    bad_i2t = nonfinite_count(sim, chunk_size)
    bad_t2i = bad_i2t if other is sim else nonfinite_count(other, chunk_size)
    return _recalls(i2t_ranks(sim, txt2img, chunk_size, finite=not bad_i2t, tie_dtype=tie_dtype, tie_tol=tie_tol),
                    t2i_ranks(other, txt2img, 4 * chunk_size, finite=not bad_t2i, tie_dtype=tie_dtype,
                              tie_tol=tie_tol), ks,
                    sim.shape[0], sim.shape[1], bad_i2t + (0 if other is sim else bad_t2i))


def attack_success_rate(clean_ranks: torch.Tensor, adv_ranks: torch.Tensor) -> float:
    """Share (percent) of queries right at rank 1 clean that the attack moves off rank 1; nan when none were right.

    Reads the pessimistic ranks above: a query tied at the top, or scored non-finite, is not at rank 1.
    """
    right = clean_ranks == 0
    if not right.any():
        return float("nan")
    return 100.0 * (adv_ranks[right] != 0).float().mean().item()


_GROUP = 128  # booleans summed in uint8 per group: at most 128 < 256, so never overflows


def _count(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Number of True along ``dim`` of a 2-D bool tensor, as int32.

    Summed in uint8 over groups of 128, then the group sums in int32: exact, and on CPU faster than
    ``mask.sum(dim, dtype=torch.int32)`` down the columns of a tile (docs/performance.md, "Counting ranks").
    """
    n = mask.shape[dim]
    u8 = mask.view(torch.uint8)
    full = n - n % _GROUP
    out = None
    if full:
        head = u8.narrow(dim, 0, full)
        shape = (full // _GROUP, _GROUP, -1) if dim == 0 else (head.shape[0], full // _GROUP, _GROUP)
        out = head.reshape(shape).sum(dim + 1, dtype=torch.uint8).sum(dim, dtype=torch.int32)
    if n - full:
        rest = u8.narrow(dim, full, n - full).sum(dim, dtype=torch.int32)
        out = rest if out is None else out + rest
    return out


def _surely_finite(image_features: torch.Tensor, text_features: torch.Tensor, dtype: torch.dtype) -> bool:
    """True when no product of these features can be non-finite: every entry finite and the bound
    ``D * max|a| * max|b|`` on every dot product at most half the dtype's largest value (one pass over each)."""
    if not image_features.numel() or not text_features.numel():
        return True
    a = image_features.abs().amax().double()  # NaN propagates through amax
    b = text_features.abs().amax().double()
    bound = image_features.shape[-1] * a * b
    return bool(torch.isfinite(a) & torch.isfinite(b) & (bound <= torch.finfo(dtype).max / 2))


#: memory the fused path may hold for the tiles that contain positive pairs, so that the second pass does not
#: compute them again (captions stored by image: about 1 + captions per image tiles per chunk of images)
_BAND_CACHE_BYTES = 256 * 2**20


def retrieval_recall_features(image_features: torch.Tensor, text_features: torch.Tensor, txt2img: torch.Tensor,
                              ks: tuple[int, ...] = (1, 5, 10), chunk_size: int = 1024,
                              tile_size: int = 1024) -> dict[str, float]:
    """``retrieval_recall(image_features @ text_features.T, txt2img)`` without ever holding the full matrix:
    the recalls of ``feature_ranks`` (which says how)."""
    i2t, t2i, nonfinite = feature_ranks(image_features, text_features, txt2img, chunk_size, tile_size)
    return _recalls(i2t.cpu(), t2i.cpu(), ks, image_features.shape[0], text_features.shape[0], nonfinite)


def feature_ranks(image_features: torch.Tensor, text_features: torch.Tensor, txt2img: torch.Tensor,
                  chunk_size: int = 1024, tile_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(``i2t_ranks``, ``t2i_ranks``, number of non-finite scores) of ``image_features @ text_features.T``,
    without ever holding the full matrix.

    Similarities are computed tile by tile (``chunk_size`` images x ``tile_size`` captions, 4 MB: it stays in
    the CPU's last-level cache while both comparisons read it, and one buffer is reused, so no page faults; the
    blocked product is then no slower than one full product, P6 of ``advlora bench``). Each tile adds to the
    image-to-text rank of its rows (captions scoring ``>=`` the row's best positive less the tie tolerance, or
    non-finite) and to the text-to-image rank of its captions (images scoring ``>=`` the caption's own image
    less the tolerance, or non-finite).

    The thresholds (the positive pairs' scores less the tie tolerance) are read from the tiles that hold
    positive pairs (the diagonal band of tiles when captions are stored by image), in a first pass; the
    tolerance comes from those scores alone (``tie_scale`` of the positives), so it is the one
    ``retrieval_recall`` takes from the full product, whatever the tile shape. Two computations of one dot
    product by different kernels (tile shapes, thread counts, CPUs) differ by far less than the tolerance, so a
    negative equal to its positive in exact arithmetic is a tie in every path (a collapsed image tower is not
    rescued by the last bit of another kernel), and the ranks equal ``retrieval_recall``'s on the full product
    but for a gap between a positive and a negative within rounding of the tolerance itself. The band tiles are
    kept for the second pass up to ``_BAND_CACHE_BYTES`` (256 MiB: the whole band of a COCO-sized set), beyond
    which they are computed again (shuffled captions put positives in every tile). Memory:
    O(chunk_size x tile_size) plus the kept band.
    """
    txt2img = torch.as_tensor(txt2img, dtype=torch.long, device=text_features.device)
    n_img, n_txt = image_features.shape[0], text_features.shape[0]
    dev = image_features.device
    c, w = max(1, min(chunk_size, n_img)), max(1, min(tile_size, n_txt))
    dtype = torch.promote_types(image_features.dtype, text_features.dtype)
    sim_buf = torch.empty(c, w, dtype=dtype, device=dev)
    gt_buf = torch.empty(c, w, dtype=torch.bool, device=dev)
    finite = _surely_finite(image_features, text_features, dtype)

    def tile_at(i0: int, t0: int) -> torch.Tensor:
        i1, t1 = min(i0 + c, n_img), min(t0 + w, n_txt)
        return torch.matmul(image_features[i0:i1], text_features[t0:t1].t(), out=sim_buf[:i1 - i0, :t1 - t0])

    def pairs_in(i0: int, t0: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions t of tile (i0, t0) whose own image lies in its rows, and those rows."""
        t = torch.arange(t0, min(t0 + w, n_txt), device=dev)
        own_img = txt2img[t0:t0 + w]
        mine = (own_img >= i0) & (own_img < i0 + c)
        return t[mine], own_img[mine] - i0

    # pass 1: each positive pair's score, from its own tile (kept, within the budget, for pass 2)
    own = torch.empty(n_txt, dtype=dtype, device=dev)
    band: dict[tuple[int, int], torch.Tensor] = {}
    budget = _BAND_CACHE_BYTES
    for t0 in range(0, n_txt, w):
        for i0 in (torch.unique(txt2img[t0:t0 + w] // c) * c).tolist():
            t, r = pairs_in(i0, t0)
            tile = tile_at(i0, t0)
            own[t] = tile[r, t - t0]
            if tile.numel() * tile.element_size() <= budget:
                band[i0, t0] = tile.clone()
                budget -= tile.numel() * tile.element_size()
    tol = set_tie_tolerance(own, dtype)
    best = _best_positive(own, txt2img, n_img) - tol   # the thresholds: positives' scores less the tolerance
    own_low = own - tol
    nonfinite = 0
    # pass 2: every tile adds to the ranks of its rows and of its captions
    i2t = torch.zeros(n_img, dtype=torch.long, device=dev)
    t2i = torch.zeros(n_txt, dtype=torch.long, device=dev)
    for i0 in range(0, n_img, c):
        i1 = min(i0 + c, n_img)
        for t0 in range(0, n_txt, w):
            t1 = min(t0 + w, n_txt)
            tile = band.pop((i0, t0), None)
            tile = tile_at(i0, t0) if tile is None else tile
            gt = gt_buf[:i1 - i0, :t1 - t0]
            if finite:
                i2t[i0:i1] += _count(torch.ge(tile, best[i0:i1, None], out=gt), dim=1)
                t2i[t0:t1] += _count(torch.ge(tile, own_low[None, t0:t1], out=gt), dim=0)
            else:
                bad = ~torch.isfinite(tile)
                nonfinite += int(bad.sum())
                i2t[i0:i1] += _count(torch.ge(tile, best[i0:i1, None], out=gt) | bad, dim=1)
                t2i[t0:t1] += _count(torch.ge(tile, own_low[None, t0:t1], out=gt) | bad, dim=0)
            # the positive pairs of this tile counted themselves: remove them, by the same comparisons
            t, r = pairs_in(i0, t0)
            if t.numel():
                v = tile[r, t - t0]
                t2i.index_add_(0, t, -_ahead(v, own_low[t]).long())
                i2t.index_add_(0, r + i0, -_ahead(v, best[r + i0]).long())
    i2t[torch.isinf(best)] = n_txt
    t2i[~torch.isfinite(own)] = n_img
    return i2t, t2i, nonfinite


#: the metrics of a classification set: the field's top-k accuracies, and the same ranks as image-to-class
#: recall (``i2t_r{k}``, their mean ``r_mean``), the names the sanity checks and summaries read
CLASSIFICATION_KEYS = ("top1", "top5", "i2t_r1", "i2t_r5", "i2t_r10", "r_mean")


def classification_ranks(scores: torch.Tensor, labels: torch.Tensor, *,
                         tie_dtype: torch.dtype | None = None, tie_tol: float | None = None) -> torch.Tensor:
    """(N,) rank (0 = first) of each image's own class among ``scores`` (N, C): the classes scoring ``>=`` it,
    or non-finite (a tie goes against the image); C (a miss) when the own score is non-finite.

    It is the text-to-image rank of the transposed matrix, each image a "caption" of its class.
    """
    return t2i_ranks(scores.t(), torch.as_tensor(labels, dtype=torch.long), tie_dtype=tie_dtype, tie_tol=tie_tol)


def classification_accuracy(scores: torch.Tensor, labels: torch.Tensor,
                            ks: tuple[int, ...] = (1, 5, 10), *, tie_dtype: torch.dtype | None = None,
                            tie_tol: float | None = None) -> dict[str, float]:
    """Top-k accuracy (percent) of ``scores`` (N images, C classes) against ``labels`` (N,), pessimistic ranks.

    Returns ``top1``, ``top5`` and ``i2t_r{k}`` for each k (the same values), ``r_mean`` (their mean over
    ``ks``) and ``nonfinite`` when some score was NaN or infinite.
    """
    if scores.dim() != 2 or torch.as_tensor(labels).numel() != scores.shape[0]:
        raise ValueError(f"scores must be (n_images, n_classes) with one label per image; got "
                         f"{tuple(scores.shape)} and {torch.as_tensor(labels).numel()} labels")
    ranks = classification_ranks(scores, labels, tie_dtype=tie_dtype, tie_tol=tie_tol)
    rec = recall_from_ranks(ranks, tuple(sorted({1, 5, *ks})), scores.shape[1])
    out = {"top1": rec[1], "top5": rec[5], **{f"i2t_r{k}": rec[k] for k in ks}}
    out["r_mean"] = sum(rec[k] for k in ks) / len(ks)
    bad = nonfinite_count(scores)
    if bad:
        out[NONFINITE_KEY] = bad
    return out


def classification_chance(n_classes: int, ks: tuple[int, ...] = (1, 5, 10)) -> float:
    """Expected ``r_mean`` (percent) of ``classification_accuracy`` for a random ranking: mean of min(k, C) / C."""
    return sum(100.0 * min(k, n_classes) / max(n_classes, 1) for k in ks) / len(ks)


def harmonic_mean(base: float, new: float) -> float:
    """The base-to-new harmonic mean H = 2 B N / (B + N) of two accuracies (any one unit), as CoOp reports it
    per data set; 0 when both are 0 (the limit, and H is 0 whenever one of them is), nan when one is nan."""
    base, new = float(base), float(new)
    if base != base or new != new:
        return float("nan")
    if base < 0 or new < 0:
        raise ValueError(f"accuracies must be >= 0, got base {base} and new {new}")
    return 0.0 if base + new == 0 else 2.0 * base * new / (base + new)
