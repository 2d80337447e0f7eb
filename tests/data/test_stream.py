"""Streaming training data: pixels decoded in DataLoader workers equal the in-memory ones; resume, ranks, shards."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from advlora.cli import main
from advlora.data import dataset as dataset_mod
from advlora.data import load_dataset
from advlora.data.stream import Augment, Failed, ImageItems, keep_in_memory, sample_seed
from advlora.errors import AdvloraError
from advlora.training.data import EpochSampler, LoaderConfig, ShardBatches, TrainBatches, wants_augmentation


@pytest.fixture
def photos(tmp_path):
    """12 JPEGs of different shapes, one caption each, in a JSON-lines file."""
    from PIL import Image

    g = torch.Generator().manual_seed(3)
    recs = []
    for i in range(12):
        arr = (torch.rand(24 + i, 30, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(tmp_path / f"p{i}.jpg")
        recs.append({"image": f"p{i}.jpg", "captions": [f"photo {i}", f"picture {i}"]})
    (tmp_path / "ann.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return tmp_path / "ann.jsonl"


def _pixels(ds, storage, workers, steps, *, rank=0, world=1, augment=None, start=0):
    sampler = EpochSampler(ds, 4, seed=5)
    src = TrainBatches(ds, sampler, 16, rank=rank, world=world,
                       config=LoaderConfig(storage=storage, workers=workers, augment=augment))
    try:
        return [src.batch(s).pixels.clone() for s in range(start, steps)], src
    finally:
        src.close()


@pytest.mark.parametrize("augment", [False, True])
def test_streamed_pixels_equal_in_memory_ones_and_resume_exactly(photos, augment):
    ds = load_dataset(str(photos), "train")
    memory, src = _pixels(ds, "memory", 0, 7, augment=augment)
    assert src.in_memory
    streamed, src = _pixels(ds, "stream", 2, 7, augment=augment)
    assert not src.in_memory and src.workers == 2
    assert all(torch.equal(a, b) for a, b in zip(memory, streamed, strict=True))
    resumed, _ = _pixels(ds, "stream", 2, 7, augment=augment, start=4)  # a resume at step 4 (epoch 1)
    assert all(torch.equal(a, b) for a, b in zip(memory[4:], resumed, strict=True))
    plain, _ = _pixels(ds, "memory", 0, 7, augment=False)
    assert all(torch.equal(a, b) for a, b in zip(memory, plain)) is (not augment)


def test_ranks_split_each_global_batch_without_duplicates(photos):
    ds = load_dataset(str(photos), "train")
    sampler = EpochSampler(ds, 4, seed=1)
    whole, _ = _pixels(ds, "stream", 0, 6)
    halves = [_pixels(ds, "stream", 1, 6, rank=r, world=2)[0] for r in range(2)]
    for step in range(6):
        assert torch.equal(torch.cat([halves[0][step], halves[1][step]]), whole[step])
        keys = [k for r in range(2) for k in TrainBatches(ds, sampler, 16, rank=r, world=2).local_keys(step)]
        assert sorted(i for i, _ in keys) == sorted(sampler.batch(step).images.tolist())
    with pytest.raises(AdvloraError, match="not divisible by the 3 processes"):
        TrainBatches(ds, sampler, 16, world=3)


def test_augmentation_is_seeded_per_sample_and_on_only_for_real_sets(photos):
    aug = Augment()
    x = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    same = [aug(x, torch.Generator().manual_seed(sample_seed(0, 1, 7))) for _ in range(2)]
    assert torch.equal(*same) and same[0].shape == x.shape and same[0].dtype == torch.uint8
    others = {aug(x, torch.Generator().manual_seed(sample_seed(0, e, 7))).sum().item() for e in range(6)}
    assert len(others) > 1  # epochs differ
    video = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    out = aug(video, torch.Generator().manual_seed(1))
    assert out.shape == video.shape  # one crop for every frame
    assert wants_augmentation(load_dataset(str(photos)), LoaderConfig())
    assert not wants_augmentation(load_dataset(str(photos)), LoaderConfig(augment=False))
    with pytest.raises(AdvloraError, match="augmentation"):
        Augment(scale=(0.5, 1.5))


def test_storage_is_chosen_by_size_and_large_sets_are_not_cached(photos, monkeypatch):
    ds = load_dataset(str(photos), "train")
    assert keep_in_memory(ds, 16) and not keep_in_memory(ds, 16, "stream")
    monkeypatch.setattr(dataset_mod, "IN_MEMORY_MAX_BYTES", ds.pixel_bytes(16) - 1)
    import advlora.data.stream as stream_mod

    monkeypatch.setattr(stream_mod, "IN_MEMORY_MAX_BYTES", ds.pixel_bytes(16) - 1)
    assert not keep_in_memory(ds, 16) and keep_in_memory(ds, 16, "memory")
    ds.load_images_uint8(16)
    from advlora.io import advlora_home

    assert not list((advlora_home() / "tensors").glob("*"))  # too large to copy into the cache
    with pytest.raises(AdvloraError, match="unknown data storage 'disk'"):
        LoaderConfig(storage="disk")


def test_a_corrupt_image_mid_stream_is_one_line_naming_it(photos):
    (photos.parent / "p5.jpg").write_bytes(b"not a jpeg")
    ds = load_dataset(str(photos), "train")
    src = TrainBatches(ds, EpochSampler(ds, 4, seed=0), 16, config=LoaderConfig(storage="stream", workers=2))
    with pytest.raises(AdvloraError) as e:
        for step in range(3):
            src.batch(step)
    src.close()
    assert str(e.value) == f"{photos.parent / 'p5.jpg'}: cannot read image (UnidentifiedImageError)"
    assert ImageItems(ds, 16)[5] == Failed(str(e.value))  # carried out of the worker as a value


def _shard(photos, out, per_shard):
    assert main(["data", "shard", str(photos), "--split", "train", "--out", str(out),
                 "--per-shard", str(per_shard)]) == 0
    return str(out / f"shard-{{00000..{(12 + per_shard - 1) // per_shard - 1:05d}}}.tar")


def test_exact_epochs_from_shards_visit_every_sample_once_over_2_ranks_x_2_workers(photos, tmp_path, capsys):
    spec = _shard(photos, tmp_path / "shards", 2)  # 6 shards for 4 readers
    assert "12 images, 24 captions in shards" in capsys.readouterr().out
    assert json.loads((tmp_path / "shards" / "sizes.json").read_text()) == {f"shard-{k:05d}.tar": 2 for k in range(6)}
    orders = []
    for epoch in range(2):
        seen: Counter = Counter()
        steps = set()
        for rank in range(2):
            source = ShardBatches(spec, 16, 4, seed=3, rank=rank, world=2, config=LoaderConfig(workers=2))
            batches = list(source.epoch(epoch))
            steps.add(len(batches))
            for batch in batches:
                assert batch.pixels.dtype == torch.uint8 and batch.pixels.shape == (2, 3, 16, 16)
                assert int(batch.valid.sum()) == len(batch.keys) and len(batch.texts) == 2
                seen.update(batch.keys)
                orders.append(tuple(batch.keys))
        assert len(steps) == 1, f"ranks disagree on the steps of epoch {epoch}: {steps}"
        assert seen == Counter({f"{i:09d}": 1 for i in range(12)}), f"epoch {epoch}: {seen}"
    again = ShardBatches(spec, 16, 4, seed=3, rank=0, world=2, config=LoaderConfig(workers=2))
    assert [tuple(b.keys) for b in again.epoch(0)] == orders[:again.epoch_steps(0)]  # deterministic
    resampled = ShardBatches(spec, 16, 4, seed=3, rank=0, world=2, config=LoaderConfig(workers=2), mode="resampled")
    assert sum(len(b.keys) for b in resampled.epoch(0)) >= 12 // 4 * 2


@pytest.mark.parametrize("workers", [0, 2])
def test_shard_batches_resume_mid_epoch_reads_what_an_uninterrupted_run_reads(photos, tmp_path, workers):
    """Unequal shards over 2 workers: a reader starting at any step (the round-robin point mid-round included)
    gives the same pixels, captions and padding as one that read from the start."""
    spec = _shard(photos, tmp_path / "shards", 5)  # shards of 5, 5 and 2 samples
    config = LoaderConfig(workers=workers)
    full = ShardBatches(spec, 16, 5, seed=1, config=config)
    steps = full.total_steps(2)
    ref = [full.batch(s) for s in range(steps)]
    assert sum(len(b.keys) for b in ref) == 24 and any(not bool(b.valid.all()) for b in ref)
    for start in range(1, steps):
        late = ShardBatches(spec, 16, 5, seed=1, config=config)
        for s in range(start, min(steps, start + 2)):
            b = late.batch(s)
            assert b.keys == ref[s].keys and b.texts == ref[s].texts and torch.equal(b.pixels, ref[s].pixels)
            assert torch.equal(b.valid, ref[s].valid) and torch.equal(b.text_ids, ref[s].text_ids)
        late.close()
    full.close()


def test_bad_shards_are_one_line_naming_the_cause(photos, tmp_path):
    spec = _shard(photos, tmp_path / "s", 4)  # 3 shards
    with pytest.raises(AdvloraError, match=r"3 shards for 2 workers x 2 ranks = 4 readers"):
        ShardBatches(spec, 16, 4, world=2, config=LoaderConfig(workers=2))
    with pytest.raises(AdvloraError, match=r"shard-00003.tar: shard not found \(7 of 10 missing\)"):
        ShardBatches(str(tmp_path / "s" / "shard-{00000..00009}.tar"), 16, 4)
    (tmp_path / "s" / "shard-00001.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(AdvloraError, match=r"shard-00001.tar: not a readable tar shard"):
        list(ShardBatches(spec, 16, 2, config=LoaderConfig(workers=0)).epoch(0))
    import webdataset as wds

    with open(tmp_path / "s" / "shard-00001.tar", "wb") as f, wds.TarWriter(f, encoder=False) as w:
        w.write({"__key__": "000000099", "jpg": (photos.parent / "p0.jpg").read_bytes()})
    with pytest.raises(AdvloraError, match=r"shard-00001.tar: sample 000000099 has no caption member \(.txt\)"):
        list(ShardBatches(spec, 16, 2, config=LoaderConfig(workers=0)).epoch(0))


def test_training_streamed_from_workers_equals_training_from_memory(tmp_path, monkeypatch):
    """The trainer's batch source: the same run, its real set streamed by workers or held in memory, is identical."""
    import csv

    from train_utils import tiny_config, write_data

    import advlora.data.stream as stream_mod
    from advlora.training import load_run_config, train

    ann = write_data(tmp_path / "data", n=8)
    cfg = load_run_config(overrides=tiny_config(ann, train={"steps": 4}))
    losses = {}
    for name, limit in (("memory", 1 << 40), ("stream", 0)):
        monkeypatch.setattr(stream_mod, "IN_MEMORY_MAX_BYTES", limit)
        train(cfg, tmp_path / name)
        with open(tmp_path / name / "history.csv", newline="") as f:
            losses[name] = [row["loss"] for row in csv.DictReader(f)]
    assert len(losses["memory"]) == 4 and losses["memory"] == losses["stream"]


def test_a_worker_that_dies_is_one_line(photos, monkeypatch):
    import os
    import signal

    ds = load_dataset(str(photos), "train")
    main_pid = os.getpid()

    def die(i, size):  # in a worker process only
        if os.getpid() != main_pid:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.zeros(3, size, size, dtype=torch.uint8)

    monkeypatch.setattr(ds, "load_item", die)
    src = TrainBatches(ds, EpochSampler(ds, 4, seed=0), 16, config=LoaderConfig(storage="stream", workers=1))
    died = r"^a data loading worker died: DataLoader worker \(pid.*\d+\) (is killed|exited unexpectedly)"
    with pytest.raises(AdvloraError, match=died):
        src.batch(0)
    src.close()


def test_decoding_a_split_into_memory_shows_progress(photos, monkeypatch, capsys):
    import advlora.progress as progress_mod

    monkeypatch.setattr(progress_mod, "LOG_INTERVAL", 0.0)
    ds = load_dataset(str(photos), "train")
    u8 = ds.load_images_uint8(16, cache=False)
    assert u8.shape == (12, 3, 16, 16) and torch.equal(u8[3], ds.load_item(3, 16))
    err = capsys.readouterr().err
    assert f"{ds.name}: decoding: image 12/12" in err, err
