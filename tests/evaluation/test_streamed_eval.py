"""Streamed robust evaluation: clean images are held as uint8 and converted per batch to exactly the floats
``load_images`` gives; no float tensor of the whole image set (clean or adversarial) is ever made; adversarial
images are read back from their per-batch records, also across processes without a state folder."""
from __future__ import annotations

import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from train_utils import free_port, save_test_model, write_data

from advlora.attacks import ThreatModel, registry
from advlora.data import load_dataset
from advlora.data.dataset import RetrievalDataset
from advlora.errors import AdvloraError
from advlora.evaluation import distributed, measure, runners
from advlora.evaluation import robust as R
from advlora.evaluation.images import AdvImages, CleanImages, Picked, TensorImages, write_record
from advlora.evaluation.retrieval import encode_images, encode_texts, evaluate_clean
from advlora.metrics import retrieval_recall_features
from advlora.models import load_model

N = 10


@pytest.fixture(scope="module")
def ann(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("stream_data"), n=N)


def test_clean_rows_are_the_floats_load_images_gives(ann, tiny_clip):
    data = load_dataset(str(ann))
    size = tiny_clip.image_size
    full = data.load_images(size)
    src = CleanImages(data.load_images_uint8(size))
    assert src.pixels.dtype == torch.uint8 and src.shape == tuple(full.shape)
    assert torch.equal(torch.cat([x for _, x in src.batches(3)]), full)       # bit for bit
    idx = torch.tensor([7, 0, 3])
    assert torch.equal(src.rows(idx), full[idx])


def test_records_and_picked_rows(tmp_path):
    rows = torch.rand(7, 3, 4, 4)
    for lo, hi in ((0, 3), (3, 5), (5, 7)):                   # three records, of unequal size
        write_record(tmp_path, torch.arange(lo, hi), rows[lo:hi])
    adv = AdvImages(tmp_path, 7, (3, 4, 4))
    idx = torch.tensor([6, 0, 4, 1])
    assert torch.equal(adv.rows(idx), rows[idx])
    assert torch.equal(torch.cat([x for _, x in adv.batches(4)]), rows)
    other = TensorImages(torch.zeros(7, 3, 4, 4))
    pick = torch.tensor([0, 1, 0, 1, 1, 0, 0])
    want = torch.where(pick[:, None, None, None] == 0, rows, torch.zeros(()))
    assert torch.equal(Picked([adv, other], pick).rows(torch.arange(7)), want)
    with pytest.raises(AdvloraError, match="no adversarial rows for 1 of 8"):
        AdvImages(tmp_path, 8, (3, 4, 4))


class _WholeSetFloats(TorchDispatchMode):
    """Records every floating tensor an operation returns whose shape is that of the whole image set."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape, self.seen = shape, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and tuple(t.shape) == self.shape:
                self.seen.append(str(func))
        return out


def _no_whole_set(monkeypatch, model, data, attacks, threat, **kw) -> dict:
    """``evaluate_robust`` with ``load_images`` refused and every operation watched: no (N, 3, S, S) float."""
    def refuse(self, *a, **k):
        raise AssertionError("evaluate_robust loaded the whole set as floats")

    monkeypatch.setattr(RetrievalDataset, "load_images", refuse)
    for module in (measure, runners):                          # features too are encoded 4 images at a time
        monkeypatch.setattr(module, "FEATURE_BATCH", 4)
    monkeypatch.setattr(measure, "ITM_BATCH", 4)              # and BLIP's image states made 4 at a time
    watch = _WholeSetFloats((len(data), 3, model.image_size, model.image_size))
    with watch:
        out = R.evaluate_robust(model, data, attacks, threat, batch_size=3, **kw)
    assert not watch.seen, watch.seen[:5]
    return out


def test_no_float_copy_of_the_whole_set_is_made(monkeypatch, tiny_clip, ann):
    data = load_dataset(str(ann))
    th = ThreatModel(eps="16/255", steps=2, seed=3)
    ref = R.evaluate_robust(tiny_clip, data, ["fgsm", "pgd", "square"], th, batch_size=3, ensemble=True,
                            square_queries=10, sanity_limit=4)
    out = _no_whole_set(monkeypatch, tiny_clip, data, ["fgsm", "pgd", "square", "text", "joint"], th, ensemble=True,
                        square_queries=10, text_budget=1, sanity_limit=4)
    for k in ("fgsm", "pgd", "square"):                       # the feature batch size changes no number
        assert out["attacks"][k]["metrics"] == ref["attacks"][k]["metrics"]
        assert out["attacks"][k]["ranks"] == ref["attacks"][k]["ranks"]
        assert out["attacks"][k]["checks"] == ref["attacks"][k]["checks"]
    assert out["ensemble"]["ranks"] == ref["ensemble"]["ranks"]
    assert out["attacks"]["pgd"]["checks"]["max_perturbation"] > 1 / 255          # the images did move
    assert [str(c) for c in out["sanity"] if "joint" not in str(c) and "text" not in str(c)] == \
        [str(c) for c in ref["sanity"]]


def test_blip_rerank_reads_the_adversarial_rows_it_needs(monkeypatch, tiny_blip, ann):
    data = load_dataset(str(ann))
    th = ThreatModel(eps="16/255", steps=1, seed=3)
    ref = R.evaluate_robust(tiny_blip, data, ["fgsm"], th, batch_size=3, sanity=False, ensemble=True)
    assert ref["rerank_k"]
    out = _no_whole_set(monkeypatch, tiny_blip, data, ["fgsm"], th, sanity=False, ensemble=True)
    for part in (out["attacks"]["fgsm"], out["ensemble"]):
        want = ref["attacks"]["fgsm"] if part is out["attacks"]["fgsm"] else ref["ensemble"]
        assert part["ranks"] == want["ranks"]


def test_clean_evaluation_streams_too(monkeypatch, tiny_clip, ann):
    data = load_dataset(str(ann))
    full = data.load_images(tiny_clip.image_size)
    want = retrieval_recall_features(encode_images(tiny_clip, full, 4), encode_texts(tiny_clip, data.captions),
                                     data.txt2img)
    monkeypatch.setattr(RetrievalDataset, "load_images", lambda *a, **k: pytest.fail("whole set as floats"))
    watch = _WholeSetFloats(tuple(full.shape))
    with watch:
        got = evaluate_clean(tiny_clip, data, batch_size=4)
    assert not watch.seen and got == want


def _worker(rank: int, model_dir: str, ann: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        model, data = load_model(model_dir, device="cpu"), load_dataset(ann)
        th = ThreatModel(eps="16/255", steps=2, restarts=2, seed=4)
        with distributed.EvalSession(distributed=True) as s:      # no state folder: a shared temporary one
            with R.attack_mode(model):
                ctx = R.context(model, data, 0)
                adv = R.attack_images(ctx, registry.get("pgd"), th, R.EvalPlan(batch_size=3), generator=None).images
                rows = adv.rows(torch.arange(len(adv)))
            root = s._spill_root
            del adv                                                # the images no longer hold the folder
            assert s.batches_run == 2                              # its own 5 of 10 images, in 2 batches
        s.barrier()
        assert root is not None and not root.exists()            # removed when the session ended
        if rank == 0:
            torch.save(rows, out)
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_without_state_share_a_temporary_folder(ann, tmp_path):
    model_dir = save_test_model(tmp_path / "model")
    torch.multiprocessing.spawn(_worker, args=(str(model_dir), str(ann), free_port(), str(tmp_path / "two.pt")),
                                nprocs=2)
    model, data = load_model(str(model_dir), device="cpu"), load_dataset(str(ann))
    th = ThreatModel(eps="16/255", steps=2, restarts=2, seed=4)
    with R.attack_mode(model):
        ctx = R.context(model, data, 0)
        one = R.attack_images(ctx, registry.get("pgd"), th, R.EvalPlan(batch_size=3), generator=None).images
    assert torch.equal(torch.load(tmp_path / "two.pt"), one.rows(torch.arange(N)))
