import pytest
import torch

from advlora.metrics import attack_success_rate, i2t_ranks, retrieval_recall, t2i_ranks


def naive_recall(sim, txt2img, ks=(1, 5, 10)):
    """The definition, one query at a time."""
    n_img, n_txt = sim.shape
    out = {}
    for k in ks:
        hits = 0
        for i in range(n_img):
            top = torch.argsort(sim[i], descending=True)[:k].tolist()
            hits += any(txt2img[j] == i for j in top)
        out[f"i2t_r{k}"] = 100.0 * hits / n_img
    for k in ks:
        hits = 0
        for j in range(n_txt):
            top = torch.argsort(sim[:, j], descending=True)[:k].tolist()
            hits += txt2img[j].item() in top
        out[f"t2i_r{k}"] = 100.0 * hits / n_txt
    out["r_mean"] = sum(out.values()) / 6
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_recall_matches_naive_loop_on_multi_caption_data(seed, chunk):
    g = torch.Generator().manual_seed(seed)
    n_img = 23
    caps_per = torch.randint(1, 6, (n_img,), generator=g)
    txt2img = torch.repeat_interleave(torch.arange(n_img), caps_per)
    txt2img = txt2img[torch.randperm(len(txt2img), generator=g)]
    # correlated scores so that recalls are neither 0 nor 100
    sim = torch.randn(n_img, len(txt2img), generator=g)
    sim[txt2img, torch.arange(len(txt2img))] += 1.5
    got = retrieval_recall(sim, txt2img, chunk_size=chunk)
    want = naive_recall(sim, txt2img)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k
    assert 0 < got["r_mean"] < 100


def test_perfect_and_reversed_scores():
    txt2img = torch.tensor([0, 0, 1, 2, 2, 2])
    perfect = (txt2img.unsqueeze(0) == torch.arange(3).unsqueeze(1)).float()
    assert retrieval_recall(perfect, txt2img)["r_mean"] == 100.0
    assert retrieval_recall(-perfect, txt2img)["i2t_r1"] == 0.0


def test_ranks_and_attack_success_rate():
    txt2img = torch.tensor([0, 1, 2])
    sim = torch.eye(3)
    assert i2t_ranks(sim, txt2img).tolist() == [0, 0, 0]
    adv = sim.clone()
    adv[0, 1] = 2.0  # image 0 now prefers caption 1; caption 1 now prefers image 0
    assert i2t_ranks(adv, txt2img).tolist() == [1, 0, 0]
    assert t2i_ranks(adv, txt2img).tolist() == [0, 1, 0]
    assert attack_success_rate(i2t_ranks(sim, txt2img), i2t_ranks(adv, txt2img)) == pytest.approx(100 / 3)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        retrieval_recall(torch.zeros(2, 3), torch.tensor([0, 1]))


@pytest.mark.parametrize("chunk,tile", [(1, 1024), (4, 3), (7, 1), (256, 16), (256, 1024)])
def test_feature_path_equals_matrix_path(chunk, tile):
    from advlora.metrics import retrieval_recall_features

    g = torch.Generator().manual_seed(3)
    n_img = 31
    caps_per = torch.randint(0, 5, (n_img,), generator=g)  # some images have no caption
    txt2img = torch.repeat_interleave(torch.arange(n_img), caps_per)
    txt2img = txt2img[torch.randperm(len(txt2img), generator=g)]
    img = torch.randn(n_img, 8, generator=g)
    txt = torch.randn(len(txt2img), 8, generator=g) + img[txt2img]
    want = retrieval_recall(img @ txt.t(), txt2img)
    assert retrieval_recall_features(img, txt, txt2img, chunk_size=chunk, tile_size=tile) == want


@pytest.mark.parametrize("shape", [(1024, 1024), (1000, 777), (129, 128), (127, 3), (300, 1)])
def test_grouped_count_is_exact(shape):
    """The uint8 group sums of the fused ranks count exactly, also for all-True columns and sliced buffers."""
    from advlora.metrics import _count

    g = torch.Generator().manual_seed(0)
    masks = [torch.rand(*shape, generator=g) > 0.3, torch.ones(*shape, dtype=torch.bool),
             (torch.rand(shape[0] + 5, shape[1] + 7, generator=g) > 0.5)[:shape[0], :shape[1]]]
    for m in masks:
        for dim in (0, 1):
            assert torch.equal(_count(m, dim), m.sum(dim, dtype=torch.int32))
