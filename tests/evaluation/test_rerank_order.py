"""BLIP's two-stage order (``itm_rerank``) equals the ITC order outside the re-ranked top k, ties included:
re-ranking the top k never moves R@j for j >= k, in either direction."""
from __future__ import annotations

import pytest
import torch
from train_utils import write_data

from advlora.data import load_dataset
from advlora.evaluation.retrieval import Rerank, evaluate_clean, itc_tolerance, itm_rerank
from advlora.metrics import i2t_ranks, t2i_ranks


class _TableITM(torch.nn.Module):
    """A model whose ITM match logit of (image i, caption j) is ``table[i, j]``; image i's pixels hold i."""

    has_itm = True
    device = torch.device("cpu")

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def image_states(self, images):
        return images.flatten(1)[:, :1]

    def itm_logits_from_states(self, states, texts):
        i = states[:, 0].round().long()
        j = torch.tensor([int(t) for t in texts])
        return torch.stack([torch.zeros(len(texts)), self.table[i, j]], dim=1)


def _case(seed: int):
    """A random multi-caption set whose ITC scores tie often (exactly, and within a few ulps) and whose ITM
    logits tie too."""
    g = torch.Generator().manual_seed(seed)
    n_img = int(torch.randint(4, 12, (1,), generator=g))
    per = torch.randint(1, 6, (n_img,), generator=g)
    txt2img = torch.arange(n_img).repeat_interleave(per)
    n_txt = len(txt2img)
    itc = (torch.randint(0, 6, (n_img, n_txt), generator=g).float() * 0.07 + 0.1)
    jitter = torch.randint(-60, 61, (n_img, n_txt), generator=g).float()
    itc = itc + jitter * torch.finfo(torch.float32).eps * itc    # up to 60 ulps apart: ties, and gaps just past one
    itm = torch.randint(-2, 3, (n_img, n_txt), generator=g).float() * 1.5
    images = torch.arange(n_img).float().view(n_img, 1, 1, 1)
    return itc, _TableITM(itm), images, [str(j) for j in range(n_txt)], txt2img


@pytest.mark.parametrize("seed", range(12))
def test_two_stage_ranks_equal_itc_outside_the_top_k(seed):
    itc, model, images, captions, txt2img = _case(seed)
    n_img, n_txt = itc.shape
    tol = itc_tolerance(itc, (txt2img, torch.arange(n_txt)))
    ref_i2t, ref_t2i = i2t_ranks(itc, txt2img), t2i_ranks(itc, txt2img)
    moved = 0
    for k in range(1, max(n_img, n_txt) + 1):
        s_i2t, s_t2i = itm_rerank(model, itc, images, captions, Rerank(k, batch_size=3), txt2img=txt2img)
        got_i2t = i2t_ranks(s_i2t, txt2img, tie_dtype=itc.dtype, tie_tol=tol)
        got_t2i = t2i_ranks(s_t2i, txt2img, tie_dtype=itc.dtype, tie_tol=tol)
        for ref, got, kk in ((ref_i2t, got_i2t, min(k, n_txt)), (ref_t2i, got_t2i, min(k, n_img))):
            outside = ref >= kk
            assert torch.equal(got[outside], ref[outside]), (k, ref.tolist(), got.tolist())
            assert bool((got[~outside] < kk).all()), (k, ref.tolist(), got.tolist())
            moved += int((got != ref).sum())
    assert moved  # the ITM stage does move ranks inside the top k: the test can tell the stages apart


def test_a_subset_of_rows_ranks_as_in_the_whole_set():
    """Rows of a subset (captions of other images: of no row, negatives of all) get the ranks they get in the
    whole set; no text-to-image work is done when it is not asked for."""
    itc, model, images, captions, txt2img = _case(3)
    n_txt = itc.shape[1]
    full = itm_rerank(model, itc, images, captions, Rerank(4), txt2img=txt2img)[0]
    want = i2t_ranks(full, txt2img, tie_dtype=itc.dtype, tie_tol=itc_tolerance(itc, (txt2img, torch.arange(n_txt))))
    sub = torch.tensor([2, 0])
    local = torch.full((itc.shape[0] + 1,), len(sub))
    local[sub] = torch.arange(len(sub))
    rows = local[txt2img]
    part, none = itm_rerank(model, itc[sub], images[sub], captions, Rerank(4, t2i=False), txt2img=rows)
    mine = rows < len(sub)
    tol = itc_tolerance(itc[sub], (rows[mine], torch.arange(n_txt)[mine]))
    padded = torch.cat([part, torch.zeros(1, n_txt, dtype=part.dtype)])
    got = i2t_ranks(padded, rows, tie_dtype=itc.dtype, tie_tol=tol)[:len(sub)]
    assert none is None and torch.equal(got, want[sub]), (got, want[sub])


@pytest.fixture(scope="module")
def blip_set(tmp_path_factory):
    return load_dataset(str(write_data(tmp_path_factory.mktemp("rr"), n=12)))


def test_the_random_blip_keeps_recall_beyond_the_depth(tiny_blip, blip_set):
    itc_only = evaluate_clean(tiny_blip, blip_set, rerank_k=0)
    for k in (1, 3, 5):
        two = evaluate_clean(tiny_blip, blip_set, rerank_k=k)
        for d in ("i2t", "t2i"):
            assert {j: two[f"{d}_r{j}"] for j in (1, 5, 10) if j >= k} == \
                {j: itc_only[f"{d}_r{j}"] for j in (1, 5, 10) if j >= k}, (k, d)
