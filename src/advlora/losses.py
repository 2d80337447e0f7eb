"""Training losses as pure functions of tensors: no model, no optimiser, no device logic.

- ``contrastive_loss``: symmetric image-text InfoNCE (CLIP, BLIP's ITC) with several positives per query
  (captions of the same image, or identical caption strings, in one batch).
- ``softmax_contrastive`` and ``sigmoid_contrastive``: the families' batch losses, one signature
  ``(image_features, text_features, logit_scale, logit_bias, positives)``: InfoNCE (CLIP, BLIP) and SigLIP's
  pairwise sigmoid loss with its logit bias.
- ``per_image_contrastive``: the image-to-text term per image, the objective a training attack maximises.
- ``itm_loss`` with ``sample_hard_negatives``: BLIP's image-text matching loss on hard negatives.
- ``kl_per_image``: the TRADES term KL(p_clean || p_adv) of image-to-text distributions, per image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def multi_positive_ce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Per-row ``-log(sum of softmax over the row's positives)``; plain cross-entropy with one positive.

    Computed as ``softplus(logsumexp(negatives) - logsumexp(positives))``, i.e. ``log(1 + sum_neg exp(s_neg -
    lse_pos))``: the same value as ``logsumexp(all) - logsumexp(positives)``, without that difference of two
    nearly equal numbers, which in float32 is exactly 0 once the positives lead by about 15 logits (a logit scale
    of 100 times a cosine gap of 0.15) while its gradient is not. This form stays positive, with a gradient
    pointing the same way, until ``exp`` of the lead underflows (about 87 logits in float32); float64 logits
    are kept in float64, lower precisions computed in float32. A row without negatives has loss 0.

    Args:
        logits: (Q, K) scores.
        positives: (Q, K) bool; every row needs at least one positive.
    """
    if positives.shape != logits.shape:
        raise ValueError(f"positives {tuple(positives.shape)} do not match logits {tuple(logits.shape)}")
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every query needs at least one positive")
    if logits.dtype != torch.float64:
        logits = logits.float()
    inf = float("-inf")
    lse_pos = torch.logsumexp(logits.masked_fill(~positives, inf), dim=1)
    neg = logits.masked_fill(positives, inf)
    # rows whose negatives are all -inf (none, or all left out) would give logsumexp a NaN gradient: loss 0
    some = (neg != inf).any(dim=1)
    lse_neg = torch.logsumexp(torch.where(some[:, None], neg, torch.zeros_like(neg)), dim=1)
    return F.softplus(torch.where(some, lse_neg - lse_pos, torch.full_like(lse_pos, inf)))


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float,
                     positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE: mean of the image-to-text and text-to-image multi-positive cross-entropies.

    Args:
        image_features, text_features: (B, D) and (T, D), unit norm.
        logit_scale: multiplier of the cosine similarities.
        positives: (B, T) bool; default the diagonal (B == T, caption i describes image i).
    """
    logits = logit_scale * image_features @ text_features.t()
    if positives is None:
        positives = torch.eye(logits.shape[0], logits.shape[1], dtype=torch.bool, device=logits.device)
    return 0.5 * (multi_positive_ce(logits, positives).mean() + multi_positive_ce(logits.t(), positives.t()).mean())


def softmax_contrastive(image_features: torch.Tensor, text_features: torch.Tensor,
                        logit_scale: torch.Tensor | float, logit_bias: torch.Tensor | float | None = None,
                        positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (the bias, constant per row, does not change a softmax and is ignored).

    Without ``positives`` the batch is B distinct pairs (caption i describes image i): plain cross-entropy
    against the diagonal; with them, ``contrastive_loss``'s multi-positive form.
    """
    if positives is not None:
        return contrastive_loss(image_features, text_features, logit_scale, positives)
    logits = logit_scale * image_features @ text_features.t()
    target = torch.arange(len(image_features), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def sigmoid_contrastive(image_features: torch.Tensor, text_features: torch.Tensor,
                        logit_scale: torch.Tensor | float, logit_bias: torch.Tensor | float | None = None,
                        positives: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's loss: every (image, text) pair is a binary match / no-match decision on
    ``logit_scale * cos + logit_bias``; the sum over pairs divided by the number of images (Zhai et al. 2023).

    Args:
        positives: (B, T) bool; default the diagonal.
    """
    logits = (logit_scale * image_features @ text_features.t()).float()
    if logit_bias is not None:
        logits = logits + logit_bias
    if positives is None:
        positives = torch.eye(logits.shape[0], logits.shape[1], dtype=torch.bool, device=logits.device)
    if positives.shape != logits.shape:
        raise ValueError(f"positives {tuple(positives.shape)} do not match logits {tuple(logits.shape)}")
    signs = positives.float() * 2 - 1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


def per_image_contrastive(image_features: torch.Tensor, text_features: torch.Tensor,
                          logit_scale: torch.Tensor | float, positives: torch.Tensor) -> torch.Tensor:
    """(B,) image-to-text multi-positive cross-entropy of each image against the caption set."""
    return multi_positive_ce(logit_scale * image_features @ text_features.t(), positives)


def kl_per_image(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """(B,) KL(softmax(clean) || softmax(adv)) per row: TRADES' robustness term over the caption set."""
    p_log = F.log_softmax(clean_logits.float(), dim=1)
    q_log = F.log_softmax(adv_logits.float(), dim=1)
    return (p_log.exp() * (p_log - q_log)).sum(dim=1)


def sample_hard_negatives(sim: torch.Tensor, positives: torch.Tensor, generator: torch.Generator | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """BLIP's hard-negative mining: for each image a negative caption, for each caption a negative image.

    Negatives are drawn with probability softmax(sim) over the non-positives of the row (column), as BLIP
    does; a row without any negative falls back to its own positive (and contributes a matched pair).
    Returns (neg_text_for_image (B,), neg_image_for_text (T,)).
    """
    sim = sim.detach().float()
    neg_txt = _draw(sim, positives, generator)
    neg_img = _draw(sim.t(), positives.t(), generator)
    return neg_txt, neg_img


def _draw(sim: torch.Tensor, positives: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    weights = torch.softmax(sim, dim=1).masked_fill(positives, 0.0)
    empty = weights.sum(dim=1) <= 0
    weights[empty] = positives[empty].float()
    return torch.multinomial(weights.cpu(), 1, generator=generator).squeeze(1).to(sim.device)


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ITM logits (N, 2) against match labels (N,) (1 = matched pair)."""
    return F.cross_entropy(logits.float(), labels.long())


__all__ = ["contrastive_loss", "itm_loss", "kl_per_image", "multi_positive_ce", "per_image_contrastive",
           "sample_hard_negatives", "sigmoid_contrastive", "softmax_contrastive"]
