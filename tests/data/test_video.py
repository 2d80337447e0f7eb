"""Video-text retrieval: PyAV decoding, the MSR-VTT / DiDeMo formats, frame pooling, clean metrics and PGD on
frames."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from advlora.data import load_dataset
from advlora.data.check import check_dataset
from advlora.data.emoji_video import write_video
from advlora.data.formats import detect_format, read_annotations
from advlora.data.video import VideoRetrievalDataset, load_video_uint8, sample_indices
from advlora.errors import AdvloraError
from advlora.models.video import VideoModel, for_dataset


def _clip(path, n_frames: int, seed: int = 0, size: int = 32) -> None:
    """A clip whose frame k is a flat grey of level 10 + 20 k plus a seeded coloured square."""
    g = torch.Generator().manual_seed(seed)
    colour = tuple(int(c) for c in torch.randint(0, 256, (3,), generator=g))
    frames = []
    for k in range(n_frames):
        im = Image.new("RGB", (size, size), (10 + 20 * k,) * 3)
        im.paste(Image.new("RGB", (8, 8), colour), (2 + 2 * k, 12))
        frames.append(im)
    write_video(path, frames, fps=4)


@pytest.fixture
def video_folder(tmp_path):
    (tmp_path / "videos").mkdir()
    for i in range(4):
        _clip(tmp_path / "videos" / f"video{i}.mp4", 12, seed=i)
    names = ["red apple", "dog face", "rocket", "green heart"]
    recs = [{"video": f"videos/video{i}.mp4", "captions": [names[i], f"a photo of {names[i]}"]} for i in range(4)]
    ann = tmp_path / "test.jsonl"
    ann.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return ann


def test_sample_indices_are_uniform():
    assert sample_indices(16, 8) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert sample_indices(8, 8) == list(range(8))
    assert sample_indices(10, 4) == [1, 3, 6, 8]


def test_decode_samples_frames_in_order(tmp_path):
    _clip(tmp_path / "a.mp4", 12)
    u8 = load_video_uint8(tmp_path / "a.mp4", 4, 16)
    assert u8.shape == (4, 3, 16, 16) and u8.dtype == torch.uint8
    grey = u8[:, :, 0, -1].float().mean(dim=1)  # the top-right corner is the frame's grey level
    expected = torch.tensor([10 + 20 * k for k in sample_indices(12, 4)], dtype=torch.float)
    assert torch.allclose(grey, expected, atol=6)


def test_bad_videos_are_one_line_naming_the_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"\x00garbage" * 100)
    _clip(tmp_path / "short.mp4", 3)
    with pytest.raises(AdvloraError, match=r"empty.mp4: video file is empty"):
        load_video_uint8(tmp_path / "empty.mp4", 8, 16)
    with pytest.raises(AdvloraError, match=r"junk.mp4: cannot read video"):
        load_video_uint8(tmp_path / "junk.mp4", 8, 16)
    with pytest.raises(AdvloraError, match=r"short.mp4: video has 3 frames, fewer than the 8 sampled"):
        load_video_uint8(tmp_path / "short.mp4", 8, 16)
    with pytest.raises(AdvloraError, match=r"nope.mp4: video file is missing"):
        load_video_uint8(tmp_path / "nope.mp4", 8, 16)


def test_video_set_loads_and_subsets_keep_the_kind(video_folder):
    ds = load_dataset(str(video_folder), frames=6)
    assert isinstance(ds, VideoRetrievalDataset) and ds.kind == "video" and ds.frames == 6
    x = ds.load_images(16)
    assert x.shape == (4, 6, 3, 16, 16) and 0 <= x.min() and x.max() <= 1
    sub = ds.limit(2)
    assert isinstance(sub, VideoRetrievalDataset) and sub.frames == 6
    assert torch.equal(sub.load_images(16), x[[int(i) for i in _indices(ds, sub)]])
    ds.frames = 20
    with pytest.raises(AdvloraError, match="video0.mp4: video has 12 frames, fewer than the 20"):
        ds.load_images(16, cache=False)


def _indices(ds, sub):
    return [ds.images.index(v) for v in sub.images]


def test_msrvtt_formats(tmp_path):
    lavis = [{"video": f"video{7000 + i}.mp4", "caption": [f"sentence {i}"]} for i in range(1000)]
    (tmp_path / "msrvtt_ret_test1k.json").write_text(json.dumps(lavis))
    blip = "\n".join(json.dumps({"clip_name": f"video{7000 + i}", "caption": f"sentence {i}"}) for i in range(1000))
    (tmp_path / "msrvtt_test.jsonl").write_text(blip + "\n")
    csv_lines = ["key,vid_key,video_id,sentence"] + [f"ret{i},msr{i},video{7000 + i},sentence {i}"
                                                     for i in range(1000)]
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text("\n".join(csv_lines) + "\n")
    for name, fmt in [("msrvtt_ret_test1k.json", "video-json"), ("msrvtt_test.jsonl", "video-jsonl"),
                      ("MSRVTT_JSFUSION_test.csv", "video-csv")]:
        assert detect_format(tmp_path / name) == fmt
        ds = read_annotations(tmp_path / name)
        assert ds.kind == "video" and (len(ds), len(ds.captions)) == (1000, 1000), name
        assert ds.images[3] == "video7003.mp4" and ds.captions[3] == "sentence 3"


def test_didemo_paragraphs(tmp_path):
    recs = [{"video": "a.mp4", "caption": ["A man walks in.", "He sits down."]},
            {"video": "b.mp4", "caption": "A dog barks."},
            {"video": "a.mp4", "caption": ["He leaves."]}]
    (tmp_path / "didemo_ret_test.json").write_text(json.dumps(recs))
    assert detect_format(tmp_path / "didemo_ret_test.json") == "didemo"
    ds = read_annotations(tmp_path / "didemo_ret_test.json")
    assert ds.images == ["a.mp4", "b.mp4"]
    assert ds.captions == ["A man walks in. He sits down. He leaves.", "A dog barks."]
    as_sentences = read_annotations(tmp_path / "didemo_ret_test.json", "video-json")
    assert len(as_sentences.captions) == 4
    (tmp_path / "bad.json").write_text(json.dumps([{"vid": "a.mp4", "caption": "x"}]))
    with pytest.raises(AdvloraError, match=r"bad.json: record 1 is missing the key 'video'"):
        read_annotations(tmp_path / "bad.json", "didemo")


def test_data_check_on_videos(video_folder):
    report = check_dataset(video_folder)
    assert report.ok and report.kind == "video" and (report.n_items, report.n_captions) == (4, 8)
    root = video_folder.parent
    (root / "videos" / "video1.mp4").write_bytes(b"")
    _clip(root / "videos" / "video2.mp4", 4)
    (root / "videos" / "video3.mp4").unlink()
    report = check_dataset(video_folder)
    assert len(report.problems) == 3 and report.missing == [str(root / "videos" / "video3.mp4")]
    assert any("video1.mp4: video file is empty" in p for p in report.unreadable)
    assert any("video2.mp4: video has 4 frames, fewer than the 8" in p for p in report.unreadable)


@pytest.mark.parametrize("arch", ["clip", "blip"])
def test_frame_pooling_contract(arch, request):
    base = request.getfixturevalue(f"tiny_{arch}")
    vm = VideoModel(base)
    assert VideoModel(vm).base is base and vm.hf_model is base.hf_model and vm.image_size == base.image_size
    g = torch.Generator().manual_seed(0)
    videos = torch.rand(2, 3, 3, 32, 32, generator=g)
    with torch.no_grad():
        pooled = vm.encode_image(videos)
        assert pooled.shape == (2, base.encode_image(videos[:, 0]).shape[1])
        assert torch.allclose(pooled.norm(dim=-1), torch.ones(2), atol=1e-5)
        # a video of one repeated frame is that frame's image embedding
        still = videos[:, :1].expand(-1, 4, -1, -1, -1)
        assert torch.allclose(vm.encode_image(still), base.encode_image(videos[:, 0]), atol=1e-5)
        assert torch.allclose(vm.encode_image(videos[:, 0]), base.encode_image(videos[:, 0]))  # images pass
        if arch == "clip":
            frames = base.encode_image(videos.flatten(0, 1)).view(2, 3, -1).mean(1)
            assert torch.allclose(pooled, torch.nn.functional.normalize(frames, dim=-1), atol=1e-5)
        else:
            states = vm.image_states(videos)
            per = base.image_states(videos[:, 0]).shape[1]
            assert states.shape[:2] == (2, 3 * per)
            assert torch.allclose(vm.embed_image_states(states), pooled, atol=1e-5)
            assert vm.itm_logits_from_states(states, ["a clip", "another clip"]).shape == (2, 2)


@pytest.mark.parametrize("arch", ["clip", "blip"])
def test_clean_eval_and_pgd_on_frames(video_folder, arch, request):
    from advlora.attacks import ThreatModel, pgd
    from advlora.attacks.objectives import contrastive
    from advlora.evaluation import evaluate_clean
    from advlora.evaluation.retrieval import encode_texts

    base = request.getfixturevalue(f"tiny_{arch}")
    ds = load_dataset(str(video_folder), frames=4)
    metrics = evaluate_clean(base, ds)  # wraps the model itself for a video set
    assert set(metrics) >= {"i2t_r1", "t2i_r1", "r_mean"} and 0 <= metrics["r_mean"] <= 100
    model = for_dataset(base, ds)
    assert isinstance(model, VideoModel) and for_dataset(model, ds) is model
    videos = ds.load_images(model.image_size)
    text = encode_texts(model, ds.captions).clone()
    positives = torch.zeros(len(ds), len(ds.captions), dtype=torch.bool)
    positives[ds.txt2img, torch.arange(len(ds.captions))] = True
    objective = contrastive(model, text, positives)
    eps = 4 / 255
    adv = pgd(objective, videos, ThreatModel(eps=eps, steps=3), generator=torch.Generator().manual_seed(0))
    assert adv.shape == videos.shape and 0 <= adv.min() and adv.max() <= 1
    assert (adv - videos).abs().max() <= eps + 1e-6
    changed = (adv - videos).abs().amax(dim=(2, 3, 4))  # (N, F): every frame is perturbed
    assert (changed > 0).all()
    with torch.no_grad():
        clean_loss, adv_loss = objective(videos), objective(adv)
    assert (adv_loss >= clean_loss - 1e-5).all()
    if arch == "clip":  # the tiny random BLIP's ITC embedding ignores its input, so only CLIP must move
        assert adv_loss.mean() > clean_loss.mean()


def test_wrapper_reports_the_base_mode(tiny_clip):
    """The wrapper's mode is its base's, so the robust report's "mode restored" line describes the model."""
    from advlora.evaluation.retrieval import eval_mode

    was = tiny_clip.training
    try:
        for training in (False, True):
            vm = VideoModel(tiny_clip.train(training))
            assert vm.training is training
            with eval_mode(vm):
                assert not vm.training and not tiny_clip.training
            assert vm.training is training and tiny_clip.training is training
    finally:
        tiny_clip.train(was)


def test_emoji_video_build(tmp_path):
    from advlora.data.emoji import find_font
    from advlora.data.emoji_video import build_emoji_video, emoji_video_split_path

    try:
        find_font()
    except AdvloraError:
        pytest.skip("Noto Color Emoji is not installed")
    root = build_emoji_video(tmp_path / "ev", n_emoji=3, frames=8, size=32, renders={"train": 2, "test": 1})
    lines = [json.loads(x) for x in (root / "test.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(r["captions"][0].split(" moving ")[1] in
                                   ("left to right", "right to left", "top to bottom", "bottom to top") for r in lines)
    train = read_annotations(root / "train.jsonl")
    assert (len(train), train.kind) == (6, "video")
    assert train.load_images(16).shape == (6, 8, 3, 16, 16)
    mtime = (root / "info.json").stat().st_mtime_ns
    assert build_emoji_video(tmp_path / "ev", n_emoji=3, frames=8, size=32, renders={"train": 2, "test": 1}) == root
    assert (root / "info.json").stat().st_mtime_ns == mtime  # cached build reused
    with pytest.raises(AdvloraError, match="unknown emoji-video split 'dev'"):
        emoji_video_split_path("dev")


@pytest.mark.parametrize("arch", ["clip", "blip"])
def test_advlora_trains_on_a_video_set(video_folder, tmp_path, arch):
    """`advlora train` on videos: the trainer attacks and trains on (B, F, 3, H, W) through frame pooling, and the
    run folder holds the same artefacts as for images (adapter keyed by the base model's layers)."""
    from train_utils import tiny_config

    from advlora.adapters import load_adapter
    from advlora.models.tiny import random_model
    from advlora.training import load_run_config, train

    cfg = load_run_config(overrides=tiny_config(
        video_folder, model={"random": f"{arch}:test"}, data={"frames": 4},
        adapter={"method": "advlora", "rank": 2, "towers": "vision"},
        train={"steps": 2, "batch_size": 4}, eval={"val_limit": 4}))
    res = train(cfg, tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["n_images"] == 4 and m["robust"]["r_mean"] <= m["clean"]["r_mean"] and res.steps == 2
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == 3
    model = random_model(arch, "test", seed=0)
    load_adapter(model, tmp_path / "run" / "adapter")   # the adapter applies to the plain image model
    trained = {k: v for k, v in model.hf_model.named_parameters() if "lora_B" in k}
    assert trained and any(v.abs().sum() > 0 for v in trained.values())
