"""Retrieval metrics as pure functions of a similarity matrix.

Definitions (the CLIP / LAVIS convention):
- image-to-text R@k: share of images for which *any* of its captions ranks in the top k captions;
- text-to-image R@k: share of captions whose image ranks in the top k images;
- ``r_mean``: the mean of the six recalls.
Ranks count the candidates scoring strictly higher than the best positive, so a tie goes to the query.
Everything is computed in chunks of rows: a 5k x 25k problem never materialises a full matrix of ranks.
"""
from __future__ import annotations

import torch

METRIC_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "r_mean")


def _positive_scores(sim: torch.Tensor, txt2img: torch.Tensor) -> torch.Tensor:
    """(n_texts,) score of each caption with its own image: one gather, no mask over the matrix."""
    return sim[txt2img, torch.arange(sim.shape[1], device=sim.device)]


def i2t_ranks(sim: torch.Tensor, txt2img: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """Rank (0 = first) of each image's best-ranked caption; ``sim`` is (n_images, n_texts)."""
    n_img, n_txt = sim.shape
    txt2img = txt2img.to(sim.device)
    # best positive score per image, by a scatter over the n_texts positive pairs (O(n_texts) work)
    best = torch.full((n_img,), float("-inf"), dtype=sim.dtype, device=sim.device)
    best.scatter_reduce_(0, txt2img, _positive_scores(sim, txt2img), reduce="amax")
    ranks = torch.empty(n_img, dtype=torch.long, device=sim.device)
    for start in range(0, n_img, chunk_size):
        rows = sim[start:start + chunk_size]                                     # (c, T)
        ranks[start:start + rows.shape[0]] = (rows > best[start:start + rows.shape[0], None]).sum(dim=1)
    ranks[torch.isinf(best)] = n_txt  # an image without captions can never be hit
    return ranks


def t2i_ranks(sim: torch.Tensor, txt2img: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """Rank (0 = first) of each caption's own image; ``sim`` is (n_images, n_texts)."""
    n_txt = sim.shape[1]
    txt2img = txt2img.to(sim.device)
    own = _positive_scores(sim, txt2img)                                         # (T,)
    ranks = torch.empty(n_txt, dtype=torch.long, device=sim.device)
    for start in range(0, n_txt, chunk_size):
        cols = sim[:, start:start + chunk_size]                                  # (I, c)
        ranks[start:start + cols.shape[1]] = (cols > own[start:start + cols.shape[1]]).sum(dim=0)
    return ranks


def recall_from_ranks(ranks: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """Percentage of queries whose rank is below k, for each k."""
    n = max(1, ranks.numel())
    return {k: 100.0 * int((ranks < k).sum()) / n for k in ks}


def retrieval_recall(sim: torch.Tensor, txt2img: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10),
                     chunk_size: int = 1024, sim_t2i: torch.Tensor | None = None) -> dict[str, float]:
    """Recall@k in both directions and their mean, in percent.

    Args:
        sim: (n_images, n_texts) similarity scores.
        txt2img: (n_texts,) index of the image each caption describes.
        ks: cut-offs; ``r_mean`` averages over both directions and all ks.
        sim_t2i: a separate (n_images, n_texts) matrix for text-to-image, when the two directions are scored
            differently (BLIP's ITM re-ranking re-scores the top k of each query's own direction).
    """
    txt2img = torch.as_tensor(txt2img, dtype=torch.long)
    if sim.dim() != 2 or txt2img.numel() != sim.shape[1]:
        raise ValueError(f"sim must be (n_images, n_texts) with one txt2img entry per text; got {tuple(sim.shape)} "
                         f"and {txt2img.numel()} entries")
    i2t = recall_from_ranks(i2t_ranks(sim, txt2img, chunk_size), ks)
    t2i = recall_from_ranks(t2i_ranks(sim if sim_t2i is None else sim_t2i, txt2img, 4 * chunk_size), ks)
    out = {f"i2t_r{k}": v for k, v in i2t.items()} | {f"t2i_r{k}": v for k, v in t2i.items()}
    out["r_mean"] = sum(out.values()) / len(out)
    return out


def attack_success_rate(clean_ranks: torch.Tensor, adv_ranks: torch.Tensor) -> float:
    """Share (percent) of queries right at rank 1 clean that the attack moves off rank 1; nan when none were right."""
    right = clean_ranks == 0
    if not right.any():
        return float("nan")
    return 100.0 * (adv_ranks[right] != 0).float().mean().item()


_GROUP = 128  # booleans summed in uint8 per group: at most 128 < 256, so never overflows


def _count(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Number of True along ``dim`` of a 2-D bool tensor, as int32.

    Summed in uint8 over groups of 128, then the group sums in int32: exact, and on CPU 4-20x faster (over runs)
    than ``mask.sum(dim, dtype=torch.int32)`` down the columns of a 1024 x 1024 tile (P6 of ``advlora bench``:
    1.24 -> 1.02 of one matmul).
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


def retrieval_recall_features(image_features: torch.Tensor, text_features: torch.Tensor, txt2img: torch.Tensor,
                              ks: tuple[int, ...] = (1, 5, 10), chunk_size: int = 1024,
                              tile_size: int = 1024) -> dict[str, float]:
    """``retrieval_recall(image_features @ text_features.T, txt2img)`` without ever holding the full matrix.

    Similarities are computed tile by tile (``chunk_size`` images x ``tile_size`` captions, 4 MB: it stays in
    the CPU's last-level cache while both comparisons read it, and one buffer is reused, so no page faults; the
    blocked product is then no slower than one full product, P6 of ``advlora bench``). Each tile adds to the
    image-to-text rank of its rows (captions scoring above the row's best positive) and to the text-to-image
    rank of its captions (images scoring above the caption's own image). The thresholds are dot products of
    the positive pairs; a positive pair itself is never counted (its tile value is checked and removed), so
    ranks are exact except where a negative ties the threshold within float rounding, which may count once
    differently than in ``retrieval_recall`` on a precomputed matrix. Memory: O(chunk_size x tile_size).
    """
    txt2img = torch.as_tensor(txt2img, dtype=torch.long, device=text_features.device)
    n_img, n_txt = image_features.shape[0], text_features.shape[0]
    dev = image_features.device
    own = (image_features[txt2img] * text_features).sum(-1)                      # (T,) each caption's own score
    best = torch.full((n_img,), float("-inf"), dtype=own.dtype, device=dev).scatter_reduce_(
        0, txt2img, own, reduce="amax")                                          # (I,) each image's best positive
    i2t = torch.zeros(n_img, dtype=torch.long, device=dev)
    t2i = torch.zeros(n_txt, dtype=torch.long, device=dev)
    c, w = max(1, min(chunk_size, n_img)), max(1, min(tile_size, n_txt))
    dtype = torch.promote_types(image_features.dtype, text_features.dtype)
    sim_buf = torch.empty(c, w, dtype=dtype, device=dev)
    gt_buf = torch.empty(c, w, dtype=torch.bool, device=dev)
    for i0 in range(0, n_img, c):
        i1 = min(i0 + c, n_img)
        block = image_features[i0:i1]
        for t0 in range(0, n_txt, w):
            t1 = min(t0 + w, n_txt)
            tile = torch.matmul(block, text_features[t0:t1].t(), out=sim_buf[:i1 - i0, :t1 - t0])
            gt = gt_buf[:i1 - i0, :t1 - t0]
            i2t[i0:i1] += _count(torch.gt(tile, best[i0:i1, None], out=gt), dim=1)
            t2i[t0:t1] += _count(torch.gt(tile, own[None, t0:t1], out=gt), dim=0)
            # the positive pairs in this tile: never count themselves (their tile value may exceed the
            # threshold's dot product in the last bit)
            t = torch.arange(t0, t1, device=dev)
            mine = (txt2img[t0:t1] >= i0) & (txt2img[t0:t1] < i1)
            if mine.any():
                t, r = t[mine], txt2img[t0:t1][mine] - i0
                v = tile[r, t - t0]
                t2i.index_add_(0, t, -(v > own[t]).long())
                i2t.index_add_(0, r + i0, -(v > best[r + i0]).long())
    i2t, t2i = i2t.cpu(), t2i.cpu()
    i2t_r = recall_from_ranks(i2t, ks)
    t2i_r = recall_from_ranks(t2i, ks)
    out = {f"i2t_r{k}": v for k, v in i2t_r.items()} | {f"t2i_r{k}": v for k, v in t2i_r.items()}
    out["r_mean"] = sum(out.values()) / len(out)
    return out
