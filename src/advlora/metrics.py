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


def i2t_ranks(sim: torch.Tensor, txt2img: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """Rank (0 = first) of each image's best-ranked caption; ``sim`` is (n_images, n_texts)."""
    n_img, n_txt = sim.shape
    txt2img = txt2img.to(sim.device)
    ranks = torch.empty(n_img, dtype=torch.long, device=sim.device)
    for start in range(0, n_img, chunk_size):
        rows = sim[start:start + chunk_size]                                     # (c, T)
        ids = torch.arange(start, start + rows.shape[0], device=sim.device)
        positive = txt2img.unsqueeze(0) == ids.unsqueeze(1)                      # (c, T) bool
        best = rows.masked_fill(~positive, float("-inf")).amax(dim=1)            # (c,)
        ranks[start:start + rows.shape[0]] = (rows > best.unsqueeze(1)).sum(dim=1)
    has_caption = torch.zeros(n_img, dtype=torch.bool, device=sim.device)
    has_caption[txt2img] = True
    ranks[~has_caption] = n_txt  # an image without captions can never be hit
    return ranks


def t2i_ranks(sim: torch.Tensor, txt2img: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """Rank (0 = first) of each caption's own image; ``sim`` is (n_images, n_texts)."""
    n_txt = sim.shape[1]
    txt2img = txt2img.to(sim.device)
    ranks = torch.empty(n_txt, dtype=torch.long, device=sim.device)
    for start in range(0, n_txt, chunk_size):
        cols = sim[:, start:start + chunk_size]                                  # (I, c)
        own = cols.gather(0, txt2img[start:start + cols.shape[1]].unsqueeze(0))  # (1, c)
        ranks[start:start + cols.shape[1]] = (cols > own).sum(dim=0)
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
