"""Ties that survive rounding: a negative within the tie tolerance of its positive counts against the query in
every path (the matrix, the tiled feature path for any tile shape and thread count, BLIP's two-stage scores,
the attacks' per-sample ranks), and the paths agree rank for rank on degenerate, near-tie and ordinary data.

Nothing here depends on the machine: ties are made by moving scores a few ulp with ``torch.nextafter`` (what
another kernel does to a dot product), and the tiled path is compared with the matrix path on the same machine.
"""
import pytest
import torch

import advlora.metrics as M
from advlora.attacks.objectives import best_positive_rank
from advlora.evaluation.retrieval import Rerank, itm_rerank
from advlora.evaluation.sanity import chance_r_mean
from advlora.metrics import (
    METRIC_KEYS,
    feature_ranks,
    i2t_ranks,
    retrieval_recall,
    retrieval_recall_features,
    t2i_ranks,
    tie_scale,
    tie_tolerance,
)

#: tile shapes that take different matrix kernels: one row or column, odd and prime sizes, a full tile
SHAPES = [(1, 1), (1, 7), (3, 4), (4, 3), (7, 7), (3, 1024), (1024, 1), (5, 2), (2, 5), (1024, 1024)]


@pytest.fixture
def threads():
    """Set the intra-op thread count for one test, restored afterwards."""
    n = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(n)


def _ulps(x: torch.Tensor, n: int, up: bool = False) -> torch.Tensor:
    """``x`` moved ``n`` representable values down (or up)."""
    to = torch.full_like(x, float("inf") if up else float("-inf"))
    for _ in range(n):
        x = torch.nextafter(x, to)
    return x


def test_the_tolerance_follows_the_dtype_and_the_scale():
    eps32 = torch.finfo(torch.float32).eps
    assert tie_tolerance(1.0, torch.float32) == pytest.approx((M.TIE_ULPS_ACCUMULATION + M.TIE_ULPS_OUTPUT) * eps32)
    assert tie_tolerance(0.5, torch.float32) == pytest.approx(tie_tolerance(1.0, torch.float32) / 2)
    assert tie_tolerance(0.0, torch.float32) == 0.0
    # bfloat16: its own rounding dominates; float64: far finer than float32
    assert tie_tolerance(1.0, torch.bfloat16) > M.TIE_ULPS_OUTPUT * torch.finfo(torch.bfloat16).eps
    assert tie_tolerance(1.0, torch.float64) < 1e-12
    s = torch.tensor([[0.5, float("nan"), -3.0], [float("inf"), 0.25, float("-inf")]])
    assert tie_scale(s).item() == 3.0                           # non-finite scores do not set the scale
    assert tie_scale(s, dim=1).tolist() == [3.0, 0.25]
    assert tie_scale(torch.zeros(0)).item() == 0.0


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_a_negative_a_few_ulp_below_its_positive_is_a_tie(n, monkeypatch):
    """Image 0's positive (caption 0) and a negative (caption 2) score the same but for ``n`` ulp; the negative
    counts against image 0 whichever side of the positive the rounding put it, and also in t2i."""
    txt2img = torch.tensor([0, 1, 1])
    sim = torch.tensor([[0.31, 0.05, 0.31], [0.02, 0.9, 0.4]])
    for up in (False, True):
        s = sim.clone()
        s[0, 2] = _ulps(s[0, 0], n, up)
        assert i2t_ranks(s, txt2img).tolist() == [1, 0]
        s = sim.clone()
        s[1, 0] = _ulps(s[0, 0], n, up)  # t2i: caption 0's own image and image 1 tie
        assert t2i_ranks(s, txt2img)[0].item() == 1
    # best_positive_rank (the attacks' per-sample ranks) reads the same rule
    s = sim.clone()
    s[0, 2] = _ulps(s[0, 0], n)
    positives = txt2img[None, :] == torch.arange(2)[:, None]
    assert best_positive_rank(s, positives).tolist() == [1, 0]
    # the test can fail: without the tolerance the negative n ulp below is not counted
    monkeypatch.setattr(M, "TIE_ULPS_ACCUMULATION", 0)
    monkeypatch.setattr(M, "TIE_ULPS_OUTPUT", 0)
    assert i2t_ranks(s, txt2img).tolist() == [0, 0]
    assert best_positive_rank(s, positives).tolist() == [0, 0]


def test_a_real_gap_is_not_a_tie():
    """A negative 100 tolerances below its positive is behind it; one 100 tolerances above is ahead."""
    txt2img = torch.tensor([0, 1, 1])
    sim = torch.tensor([[0.31, 0.05, 0.0], [0.02, 0.9, 0.4]])
    tol = tie_tolerance(0.9, torch.float32)  # the set's scale: its largest positive score
    for delta, want in ((-100 * tol, 0), (100 * tol, 1)):
        s = sim.clone()
        s[0, 2] = 0.31 + delta
        assert i2t_ranks(s, txt2img)[0].item() == want
        positives = txt2img[None, :] == torch.arange(2)[:, None]
        assert best_positive_rank(s, positives)[0].item() == want


def test_non_finite_scores_never_count_as_hits():
    txt2img = torch.tensor([0, 1])
    for bad in (float("nan"), float("inf"), float("-inf")):
        sim = torch.tensor([[bad, 0.0], [0.0, 1.0]])
        assert i2t_ranks(sim, txt2img)[0].item() == 2 and t2i_ranks(sim, txt2img)[0].item() == 2
        neg = torch.tensor([[1.0, bad], [0.0, 1.0]])  # a non-finite negative counts ahead of the positive
        assert i2t_ranks(neg, txt2img)[0].item() == 1


def _cases():
    """(name, image features, text features, txt2img): degenerate, near-tie and ordinary."""
    g = torch.Generator().manual_seed(7)
    n_img, d = 23, 16
    caps = torch.randint(1, 4, (n_img,), generator=g)
    txt2img = torch.repeat_interleave(torch.arange(n_img), caps)
    txt2img = txt2img[torch.randperm(len(txt2img), generator=g)]
    n_txt = len(txt2img)
    unit = lambda x: torch.nn.functional.normalize(x, dim=-1)  # noqa: E731
    txt = unit(torch.randn(n_txt, d, generator=g))
    img = unit(torch.randn(n_img, d, generator=g))
    collapsed = unit(torch.randn(1, d, generator=g)).expand(n_img, d).contiguous()
    # near ties: images and captions that are copies of others moved one or two ulp in some coordinates
    near_img, near_txt = img.clone(), unit(txt + 2 * img[txt2img])
    near_img[1::3] = _ulps(near_img[0::3][:len(near_img[1::3])], 1, up=True)
    near_txt[1::2] = _ulps(near_txt[0::2][:len(near_txt[1::2])], 2)
    return [("collapsed image tower", collapsed, txt, txt2img),
            ("all equal", torch.ones(n_img, d), torch.ones(n_txt, d), txt2img),
            ("near ties", near_img, near_txt, txt2img),
            ("ordinary", img, unit(txt + img[txt2img]), txt2img),
            ("unnormalised", torch.randn(n_img, d, generator=g) * 3, torch.randn(n_txt, d, generator=g), txt2img)]


@pytest.mark.parametrize("n_threads", [1, 2])
def test_tiled_ranks_equal_the_matrix_ranks_for_every_tile_shape(n_threads, threads):
    threads(n_threads)
    for name, img, txt, txt2img in _cases():
        sim = img @ txt.t()
        want = i2t_ranks(sim, txt2img), t2i_ranks(sim, txt2img)
        want_recall = retrieval_recall(sim, txt2img)
        for chunk, tile in SHAPES:
            i2t, t2i, bad = feature_ranks(img, txt, txt2img, chunk_size=chunk, tile_size=tile)
            assert torch.equal(i2t, want[0]) and torch.equal(t2i, want[1]), (name, chunk, tile)
            assert bad == 0
            got = retrieval_recall_features(img, txt, txt2img, chunk_size=chunk, tile_size=tile)
            assert got == want_recall, (name, chunk, tile)
        for chunk in (1, 3, 4, 7, 1024):  # the matrix path's own chunks
            assert torch.equal(i2t_ranks(sim, txt2img, chunk_size=chunk), want[0]), (name, chunk)
            assert torch.equal(t2i_ranks(sim, txt2img, chunk_size=chunk), want[1]), (name, chunk)


def test_near_ties_are_ties_in_every_path():
    """The near-tie case is not vacuous: its copies moved by an ulp tie with their originals (and with exact
    comparisons some would not)."""
    _, img, txt, txt2img = _cases()[2]
    sim = img @ txt.t()
    pos = txt2img[None, :] == torch.arange(len(img))[:, None]
    best = sim.masked_fill(~pos, float("-inf")).amax(dim=1)
    exact = ((sim >= best[:, None]) & ~pos).sum(dim=1)
    assert (i2t_ranks(sim, txt2img) >= exact).all()
    assert (i2t_ranks(sim, txt2img) > exact).any()


@pytest.mark.parametrize("n_threads", [1, 2])
def test_degenerate_features_score_at_or_below_chance_everywhere(n_threads, threads):
    threads(n_threads)
    for name, img, txt, txt2img in _cases()[:2]:
        n_img = len(img)
        chance = chance_r_mean(txt2img, n_img)
        results = [retrieval_recall(img @ txt.t(), txt2img)]
        results += [retrieval_recall_features(img, txt, txt2img, chunk_size=c, tile_size=t) for c, t in SHAPES]
        for got in results:
            assert got["r_mean"] <= chance + 1e-9, (name, got, chance)
            assert got["t2i_r1"] == 0.0, (name, got)
        # the attacks' per-sample ranks: every image of a collapsed tower ties with the captions of the others
        sim = img @ txt.t()
        positives = txt2img[None, :] == torch.arange(n_img)[:, None]
        if name == "all equal":
            assert (best_positive_rank(sim, positives) == (~positives).sum(dim=1)).all()
        else:
            assert (best_positive_rank(sim, positives) > 0).sum() >= n_img - 1


class _ConstantITM(torch.nn.Module):
    """A BLIP whose ITM match logit is the same for every pair but for the last bit, which depends on the
    pair's place in its batch (as another kernel for another batch shape would round it)."""

    has_itm = True
    device = torch.device("cpu")

    def image_states(self, images):
        return images.flatten(1)[:, :4]

    def itm_logits_from_states(self, states, texts):
        logit = torch.full((len(texts),), 2.5)
        logit[1::2] = _ulps(logit[1::2], 1, up=True)
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


@pytest.mark.parametrize("k", [1, 3, 10, 20])
@pytest.mark.parametrize("jitter", [0, 3])
def test_blip_two_stage_ties_go_against_the_query(k, jitter):
    """An all-equal ITC matrix (or one whose entries differ by a few ulp) re-ranked by an ITM that ties up to
    the last bit: at or below chance, with no query at rank 1, for every re-rank depth."""
    n_img = 10
    txt2img = torch.arange(n_img).repeat_interleave(2)
    itc = torch.full((n_img, len(txt2img)), 0.25)
    if jitter:  # positives a few ulp above every negative: still ties
        itc[txt2img, torch.arange(len(txt2img))] = _ulps(torch.tensor(0.25), jitter, up=True)
    images = torch.rand(n_img, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    captions = [f"c{j}" for j in range(len(txt2img))]
    s_i2t, s_t2i = itm_rerank(_ConstantITM(), itc, images, captions, Rerank(k=k, batch_size=3), txt2img=txt2img)
    got = retrieval_recall(s_i2t, txt2img, sim_t2i=s_t2i, tie_dtype=itc.dtype)
    assert got["r_mean"] <= chance_r_mean(txt2img, n_img) + 1e-9, got
    assert got["i2t_r1"] == 0.0 and got["t2i_r1"] == 0.0, got
    assert set(got) == set(METRIC_KEYS)
    if k == 1:  # the test can fail: without txt2img, topk takes the first caption, image 0's own
        s_i2t, s_t2i = itm_rerank(_ConstantITM(), itc, images, captions, Rerank(k=k, batch_size=3))
        assert retrieval_recall(s_i2t, txt2img, sim_t2i=s_t2i, tie_dtype=itc.dtype)["i2t_r1"] > 0.0
