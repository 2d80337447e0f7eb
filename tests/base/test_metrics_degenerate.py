"""Pessimistic ranks (ties and non-finite scores count against the query) and BLIP's two-stage scores, against
naive oracles written one query at a time."""
import math

import pytest
import torch

from advlora.errors import AdvloraError
from advlora.evaluation.retrieval import Rerank, check_rerank_k, default_rerank_k, itm_rerank
from advlora.evaluation.sanity import chance_r_mean
from advlora.metrics import (
    METRIC_KEYS,
    attack_success_rate,
    i2t_ranks,
    retrieval_recall,
    retrieval_recall_features,
    t2i_ranks,
)

KS = (1, 5, 10)


def _first_positive(scores: list[float], positive: list[bool]) -> int | None:
    """Place of the first positive after a pessimistic sort: a non-finite negative first of all, then by score
    with negatives before positives on a tie, a non-finite positive last; None when no positive is finite."""
    def key(j):
        s, p = scores[j], positive[j]
        if not math.isfinite(s):
            return (0, 0.0, 0) if p else (2, 0.0, 0)
        return (1, s, 0 if p else 1)
    order = sorted(range(len(scores)), key=key, reverse=True)
    for place, j in enumerate(order):
        if positive[j]:
            return place if math.isfinite(scores[j]) else None
    return None


def naive_ranks(sim, txt2img):
    """(i2t, t2i) places of the first positive per query; None = a miss."""
    n_img, n_txt = sim.shape
    t2i_of = txt2img.tolist()
    i2t = [_first_positive(sim[i].tolist(), [t2i_of[j] == i for j in range(n_txt)]) for i in range(n_img)]
    t2i = [_first_positive(sim[:, j].tolist(), [i == t2i_of[j] for i in range(n_img)]) for j in range(n_txt)]
    return i2t, t2i


def naive_recall(sim, txt2img, sim_t2i=None):
    i2t, _ = naive_ranks(sim, txt2img)
    _, t2i = naive_ranks(sim if sim_t2i is None else sim_t2i, txt2img)
    out = {f"i2t_r{k}": 100.0 * sum(r is not None and r < k for r in i2t) / len(i2t) for k in KS}
    out |= {f"t2i_r{k}": 100.0 * sum(r is not None and r < k for r in t2i) / len(t2i) for k in KS}
    out["r_mean"] = sum(out.values()) / 6
    return out


def _as_ranks(naive, n):
    return [n if r is None else r for r in naive]


def _data(seed, n_img=17, max_caps=4):
    g = torch.Generator().manual_seed(seed)
    caps = torch.randint(1, max_caps + 1, (n_img,), generator=g)
    txt2img = torch.repeat_interleave(torch.arange(n_img), caps)
    return g, txt2img[torch.randperm(len(txt2img), generator=g)]


def _assert_same(got, want):
    for k in METRIC_KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-9), (k, got, want)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["float", "ties", "nonfinite"])
def test_ranks_equal_a_naive_pessimistic_sort(seed, kind):
    g, txt2img = _data(seed)
    n_img, n_txt = 17, len(txt2img)
    if kind == "float":
        sim = torch.randn(n_img, n_txt, generator=g)
    else:  # few distinct values: many ties between positives and negatives
        sim = torch.randint(0, 4, (n_img, n_txt), generator=g).float()
    sim[txt2img, torch.arange(n_txt)] += 1.0
    if kind == "nonfinite":
        bad = torch.rand(n_img, n_txt, generator=g) < 0.08
        vals = torch.tensor([float("nan"), float("inf"), float("-inf")])[torch.randint(0, 3, (n_img, n_txt),
                                                                                         generator=g)]
        sim = torch.where(bad, vals, sim)
    want_i2t, want_t2i = naive_ranks(sim, txt2img)
    assert i2t_ranks(sim, txt2img, chunk_size=5).tolist() == _as_ranks(want_i2t, n_txt)
    assert t2i_ranks(sim, txt2img, chunk_size=7).tolist() == _as_ranks(want_t2i, n_img)
    got = retrieval_recall(sim, txt2img, chunk_size=4)
    _assert_same(got, naive_recall(sim, txt2img))
    n_bad = int((~torch.isfinite(sim)).sum())
    assert got.get("nonfinite", 0) == n_bad
    assert (n_bad > 0) == (kind == "nonfinite")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_feature_path_equals_the_naive_sort(seed, ties):
    g, txt2img = _data(seed, n_img=19)
    d = 6
    if ties:  # small integer features: exact products, many equal scores
        img = torch.randint(-1, 2, (19, d), generator=g).float()
        txt = torch.randint(-1, 2, (len(txt2img), d), generator=g).float()
    else:
        img = torch.randn(19, d, generator=g)
        txt = torch.randn(len(txt2img), d, generator=g) + img[txt2img]
    want = naive_recall(img @ txt.t(), txt2img)
    for chunk, tile in [(1, 1024), (4, 3), (7, 1), (256, 16)]:
        _assert_same(retrieval_recall_features(img, txt, txt2img, chunk_size=chunk, tile_size=tile), want)


@pytest.mark.parametrize("budget", [0, 3 * 4 * 4 * 4])
def test_feature_path_without_the_band_cache(monkeypatch, budget):
    """Band tiles beyond the cache budget are computed again in the second pass: same ranks."""
    import advlora.metrics as M

    g, txt2img = _data(5, n_img=19)
    img = torch.randint(-1, 2, (19, 6), generator=g).float()
    txt = torch.randint(-1, 2, (len(txt2img), 6), generator=g).float()
    want = naive_recall(img @ txt.t(), txt2img)
    monkeypatch.setattr(M, "_BAND_CACHE_BYTES", budget)
    _assert_same(retrieval_recall_features(img, txt, txt2img, chunk_size=4, tile_size=4), want)


def test_feature_path_reports_nonfinite_features():
    g, txt2img = _data(0, n_img=9)
    img = torch.randn(9, 5, generator=g)
    txt = torch.randn(len(txt2img), 5, generator=g) + img[txt2img]
    img[2, 0] = float("nan")  # image 2: every score NaN
    txt[3, 1] = float("inf")  # caption 3: infinite against (almost) every image
    sim = img @ txt.t()
    want = naive_recall(sim, txt2img)
    for chunk, tile in [(1, 1024), (4, 3), (256, 16)]:
        got = retrieval_recall_features(img, txt, txt2img, chunk_size=chunk, tile_size=tile)
        _assert_same(got, want)
        assert got["nonfinite"] == int((~torch.isfinite(sim)).sum()) > 0
    assert i2t_ranks(sim, txt2img)[2] == len(txt2img)  # a miss


def _degenerate_cases(n_img=10, caps=2, d=8):
    txt2img = torch.arange(n_img).repeat_interleave(caps)
    g = torch.Generator().manual_seed(0)
    txt = torch.nn.functional.normalize(torch.randn(len(txt2img), d, generator=g), dim=-1)
    collapsed = torch.nn.functional.normalize(torch.randn(1, d, generator=g), dim=-1).expand(n_img, d).contiguous()
    return txt2img, {"all equal": torch.zeros(n_img, len(txt2img)),
                     "all NaN": torch.full((n_img, len(txt2img)), float("nan")),
                     "collapsed image tower": collapsed @ txt.t()}, (collapsed, txt)


@pytest.mark.parametrize("n_img,caps", [(10, 2), (7, 1), (30, 5)])
def test_degenerate_scores_are_at_or_below_chance(n_img, caps):
    txt2img, cases, (img_f, txt_f) = _degenerate_cases(n_img, caps)
    chance = chance_r_mean(txt2img, n_img)
    for name, sim in cases.items():
        got = retrieval_recall(sim, txt2img)
        assert got["r_mean"] <= chance + 1e-9, (name, got, chance)
        assert got["i2t_r1"] == 0.0 or name == "collapsed image tower", name
        assert got["t2i_r1"] == 0.0 and got["t2i_r5"] <= 100.0 * min(5, n_img) / n_img - 100.0 / n_img, name
    for chunk, tile in [(1024, 1024), (3, 4), (1, 1)]:
        got = retrieval_recall_features(img_f, txt_f, txt2img, chunk_size=chunk, tile_size=tile)
        assert got["r_mean"] <= chance + 1e-9 and got["t2i_r1"] == 0.0, (chunk, tile, got)
    nan = retrieval_recall(cases["all NaN"], txt2img)
    assert nan["nonfinite"] == n_img * len(txt2img)
    assert all(nan[k] == 0.0 for k in METRIC_KEYS), nan  # every query a miss, even for a k past the gallery
    assert "nonfinite" not in retrieval_recall(cases["all equal"], txt2img)


def test_the_issue_example_is_no_longer_perfect():
    got = retrieval_recall(torch.zeros(10, 20), torch.arange(10).repeat_interleave(2))
    # was r_mean 100.0 when ties went to the query; now every positive is last: only t2i R@10 over a gallery of
    # 10 images still finds it
    assert {k: got[k] for k in METRIC_KEYS[:-1]} == {"i2t_r1": 0.0, "i2t_r5": 0.0, "i2t_r10": 0.0,
                                                     "t2i_r1": 0.0, "t2i_r5": 0.0, "t2i_r10": 100.0}


def test_attack_success_rate_reads_pessimistic_ranks():
    txt2img = torch.tensor([0, 1, 2])
    clean = torch.eye(3)
    adv = clean.clone()
    adv[0, 1] = 1.0  # image 0: caption 1 ties with its own caption -> off rank 1
    adv[2, 2] = float("nan")  # image 2: its only positive is NaN -> a miss
    assert i2t_ranks(adv, txt2img).tolist() == [1, 0, 3]
    assert attack_success_rate(i2t_ranks(clean, txt2img), i2t_ranks(adv, txt2img)) == pytest.approx(200 / 3)


# --- BLIP's two-stage scores ---

class _TableITM(torch.nn.Module):
    """A BLIP whose ITM logits are looked up in a table computed once with the real model (same numbers, so
    the twenty re-rankings below cost one pass over the pairs)."""

    def __init__(self, model, images, captions):
        super().__init__()
        self.model = model
        with torch.inference_mode():
            self.states = model.image_states(images)
            n_img, n_txt = len(images), len(captions)
            ii = torch.arange(n_img).repeat_interleave(n_txt)
            jj = torch.arange(n_txt).repeat(n_img)
            self.table = torch.cat([model.itm_logits_from_states(self.states[ii[s:s + 64]],
                                                                 [captions[j] for j in jj[s:s + 64].tolist()])
                                    for s in range(0, len(ii), 64)]).view(n_img, n_txt, 2)
        self.caption_index = {c: j for j, c in enumerate(captions)}

    has_itm = True

    @property
    def device(self):
        return self.model.device

    def image_states(self, images):
        return self.model.image_states(images)

    def itm_logits_from_states(self, states, texts):
        i = torch.cdist(states.flatten(1), self.states.flatten(1)).argmin(dim=1)
        j = torch.tensor([self.caption_index[t] for t in texts])
        return self.table[i, j]


def naive_two_stage(itc, itm_match, txt2img, k):
    """Recall of BLIP's two-stage retrieval, one query at a time: the top k by ITC re-sorted by itm + itc, then
    every other candidate in ITC order."""
    n_img, n_txt = itc.shape
    t2i_of = txt2img.tolist()

    def place(itc_row, itm_row, is_pos):
        kk = min(k, len(itc_row))
        top = torch.topk(itc_row, kk).indices.tolist()
        top.sort(key=lambda j: (itm_row[j] + itc_row[j]).item(), reverse=True)
        rest = sorted(set(range(len(itc_row))) - set(top), key=lambda j: itc_row[j].item(), reverse=True)
        return next(p for p, j in enumerate(top + rest) if is_pos(j))

    i2t = [place(itc[i], itm_match[i], lambda j, i=i: t2i_of[j] == i) for i in range(n_img)]
    t2i = [place(itc[:, j], itm_match[:, j], lambda i, j=j: i == t2i_of[j]) for j in range(n_txt)]
    out = {f"i2t_r{c}": 100.0 * sum(r < c for r in i2t) / n_img for c in KS}
    out |= {f"t2i_r{c}": 100.0 * sum(r < c for r in t2i) / n_txt for c in KS}
    out["r_mean"] = sum(out.values()) / 6
    return out


@pytest.fixture(scope="module")
def blip_case():
    from advlora.models.tiny import random_model

    model = random_model("blip", "test", seed=0).eval()
    g = torch.Generator().manual_seed(1)
    n_img = 8
    images = torch.rand(n_img, 3, model.image_size, model.image_size, generator=g)
    txt2img = torch.arange(n_img).repeat_interleave(2)
    words = ["grinning face", "flag: japan", "red apple", "dog face", "cat face", "thumbs up", "rocket",
             "birthday cake", "green heart", "blue car", "sun behind cloud", "a man riding a horse",
             "house with garden",
             "two people walking", "waving hand", "smiling face with sunglasses"]  # in the tiny tokenizer's corpus
    captions = words[:2 * n_img]
    with torch.inference_mode():
        itc = model.encode_image(images) @ model.encode_text(captions).t()
    assert len(set(itc.flatten().tolist())) == itc.numel()  # no ITC ties: the oracle's order is unambiguous
    table = _TableITM(model, images, captions)
    return model, table, images, captions, txt2img, itc


def test_itm_rerank_equals_a_naive_two_stage_loop_for_every_depth(blip_case):
    model, table, images, captions, txt2img, itc = blip_case
    match = table.table[..., 1]
    seen = set()
    for k in range(1, 21):
        s_i2t, s_t2i = itm_rerank(table, itc, images, captions, Rerank(k=k))
        got = retrieval_recall(s_i2t, txt2img, sim_t2i=s_t2i)
        want = naive_two_stage(itc, match, txt2img, k)
        _assert_same(got, want)
        seen.add(round(got["r_mean"], 6))
    assert len(seen) > 2  # the depth matters on this set: the test can tell depths apart
    _assert_same(retrieval_recall(itc, txt2img), naive_two_stage(itc, torch.zeros_like(itc), txt2img, 1))


def test_itm_rerank_with_the_real_model_equals_the_table(blip_case):
    model, table, images, captions, txt2img, itc = blip_case
    for k in (3, 7):
        real = itm_rerank(model, itc, images, captions, Rerank(k=k))
        looked_up = itm_rerank(table, itc, images, captions, Rerank(k=k))
        for a, b in zip(real, looked_up):
            assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("bad", [-2, -100, 1.5, "16", True])
def test_a_bad_rerank_k_is_one_line(bad):
    with pytest.raises(AdvloraError, match="rerank_k must be") as e:
        check_rerank_k(bad)
    assert "\n" not in str(e.value)


def test_itm_rerank_refuses_depth_below_one(blip_case):
    _, table, images, captions, _, itc = blip_case
    for bad in (0, -1, 2.0):
        with pytest.raises(AdvloraError):
            itm_rerank(table, itc, images, captions, Rerank(k=bad))


def test_default_rerank_k_follows_lavis_by_set_size(tiny_clip, tiny_blip):
    assert default_rerank_k(tiny_clip) is None and default_rerank_k(tiny_clip, 5000) is None
    assert default_rerank_k(tiny_blip) == 128                  # size unknown: Flickr30K's depth
    assert default_rerank_k(tiny_blip, 1000) == 128            # Flickr30K 1k test
    assert default_rerank_k(tiny_blip, 5000) == 256            # COCO 5k test
    assert default_rerank_k(tiny_blip, 25) == 25               # a small set: its whole gallery, no more
    assert check_rerank_k(-1) == -1 and check_rerank_k(0) == 0 and check_rerank_k(None) is None
