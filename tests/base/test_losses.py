"""advlora.losses: symmetric multi-positive contrastive loss, TRADES KL, BLIP ITM hard negatives."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from advlora.losses import (
    contrastive_loss,
    itm_loss,
    kl_per_image,
    multi_positive_ce,
    per_image_contrastive,
    sample_hard_negatives,
)


def _feats(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_one_positive_is_clip_loss():
    img, txt = _feats(5), _feats(5, seed=1)
    logits = 10.0 * img @ txt.t()
    target = torch.arange(5)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    assert torch.allclose(contrastive_loss(img, txt, 10.0), expected, atol=1e-6)


def test_multi_positive_row_sums_the_positives_probabilities():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    pos = torch.tensor([[True, True, False], [False, True, False]])
    p = logits.softmax(dim=1)
    expected = torch.stack([-torch.log(p[0, 0] + p[0, 1]), -torch.log(p[1, 1])])
    assert torch.allclose(multi_positive_ce(logits, pos), expected, atol=1e-6)


def test_duplicate_caption_as_positive_lowers_the_loss_and_is_symmetric():
    img = _feats(3)
    txt = torch.cat([img[:2], img[:1]])          # caption 2 is a copy of caption 0
    pos_eye = torch.eye(3, dtype=torch.bool)
    pos_multi = pos_eye.clone()
    pos_multi[0, 2] = pos_multi[2, 0] = True
    assert contrastive_loss(img, txt, 5.0, pos_multi) < contrastive_loss(img, txt, 5.0, pos_eye)
    # swapping the roles of images and texts (transposed positives) gives the same symmetric loss
    assert torch.allclose(contrastive_loss(img, txt, 5.0, pos_multi), contrastive_loss(txt, img, 5.0, pos_multi.t()))


def test_per_image_contrastive_matches_cross_entropy_and_errors():
    img, txt = _feats(4), _feats(6, seed=2)
    pos = torch.zeros(4, 6, dtype=torch.bool)
    pos[torch.arange(4), torch.tensor([0, 2, 4, 5])] = True
    out = per_image_contrastive(img, txt, 3.0, pos)
    assert out.shape == (4,)
    assert torch.allclose(out, F.cross_entropy(3.0 * img @ txt.t(), torch.tensor([0, 2, 4, 5]), reduction="none"))
    pos[1] = False
    with pytest.raises(ValueError, match="at least one positive"):
        per_image_contrastive(img, txt, 3.0, pos)


def test_kl_per_image():
    a = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    b = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(kl_per_image(a, a), torch.zeros(3), atol=1e-6)
    ref = F.kl_div(F.log_softmax(b, 1), F.log_softmax(a, 1), log_target=True, reduction="none").sum(1)
    assert torch.allclose(kl_per_image(a, b), ref, atol=1e-6)
    assert (kl_per_image(a, b) > 0).all()


def test_hard_negatives_are_never_positives_and_follow_similarity():
    sim = torch.tensor([[1.0, 0.9, -5.0, -5.0], [0.2, 1.0, 0.1, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    pos = torch.eye(4, dtype=torch.bool)
    pos[1, 2] = pos[2, 1] = True
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(100):
        neg_txt, neg_img = sample_hard_negatives(sim * 5, pos, g)
        assert not pos[torch.arange(4), neg_txt].any()
        assert not pos.t()[torch.arange(4), neg_img].any()
        counts[neg_txt[0]] += 1
    assert counts[1] > 75            # image 0's most similar non-positive caption is picked most often
    all_pos = torch.ones(2, 2, dtype=torch.bool)
    neg_txt, _ = sample_hard_negatives(torch.zeros(2, 2), all_pos, g)   # no negative: falls back, no error
    assert neg_txt.shape == (2,)


def test_itm_loss():
    logits = torch.tensor([[0.0, 10.0], [10.0, 0.0]])
    assert itm_loss(logits, torch.tensor([1, 0])) < 1e-3
    assert math.isclose(float(itm_loss(torch.zeros(2, 2), torch.tensor([1, 0]))), math.log(2), rel_tol=1e-6)
