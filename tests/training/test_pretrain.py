"""Pre-training of the tiny models: a few steps on a few emoji, saved as a hub checkpoint and read back."""
from __future__ import annotations

import json

import pytest
import torch

from advlora.data.emoji import build_emoji, find_font
from advlora.errors import AdvloraError
from advlora.training.pretrain import PretrainConfig, build_model, multi_positive_nce, pretrain

try:
    find_font()
    HAVE_FONT = True
except AdvloraError:
    HAVE_FONT = False


@pytest.fixture(scope="module")
def small_emoji(tmp_path_factory):
    if not HAVE_FONT:
        pytest.skip("Noto Color Emoji is not installed")
    from advlora.data.formats import read_annotations

    root = build_emoji(tmp_path_factory.mktemp("emoji"), limit=10, image_size=32,
                       renders={"train": 2, "val": 1, "test": 1}, workers=1)
    return {s: read_annotations(root / f"{s}.jsonl") for s in ("train", "test")}


def test_multi_positive_nce_matches_cross_entropy_with_one_positive():
    logits = torch.randn(4, 7)
    target = torch.tensor([0, 3, 6, 2])
    pos = torch.nn.functional.one_hot(target, 7).bool()
    assert torch.allclose(multi_positive_nce(logits, pos), torch.nn.functional.cross_entropy(logits, target))
    pos[:, 1] = True  # more positives can only lower the loss
    assert multi_positive_nce(logits, pos) < torch.nn.functional.cross_entropy(logits, target)


@pytest.mark.parametrize("arch", ["clip", "blip"])
def test_pretrain_saves_a_checkpoint_that_load_model_reads_back(arch, small_emoji, tmp_path):
    from advlora.models import load_model

    cfg = PretrainConfig(size="test", epochs=3, batch_size=8, vocab_size=120, lr=1e-3)
    out = tmp_path / f"tiny-{arch}"
    res = pretrain(arch, out, config=cfg, train_data=small_emoji["train"],
                   eval_data={"test": small_emoji["test"]}, progress=False)
    assert res.steps == 3 and res.seconds > 0
    assert {"i2t_r1", "t2i_r10", "r_mean"} <= set(res.metrics["test"])
    assert (out / "model.safetensors").exists() and (out / "preprocessor_config.json").exists()
    assert json.loads((out / "pretrain.json").read_text())["steps"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    fresh = build_model(arch, small_emoji["train"].captions, cfg, seed=0)  # the same initialisation
    trained = dict(res.model.hf_model.vision_model.named_parameters())
    assert any(not torch.equal(p, trained[n]) for n, p in fresh.hf_model.vision_model.named_parameters())

    loaded = load_model(str(out))
    images = small_emoji["test"].load_images(loaded.image_size, cache=False)[:4]
    texts = small_emoji["test"].captions[:5]
    assert loaded.image_size == res.model.image_size and loaded.arch == arch
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(images), res.model.encode_image(images), atol=1e-5)
        assert torch.allclose(loaded.encode_text(texts), res.model.encode_text(texts), atol=1e-5)
        assert torch.allclose(loaded.logit_scale, res.model.logit_scale)
        if arch == "blip":
            def itm(m):  # the "match" logit of pairs (image i, text i)
                return m.itm_logits_from_states(m.image_states(images), texts[:4])[:, 1]

            assert torch.allclose(itm(loaded), itm(res.model), atol=1e-5)
            assert "test (ITC only)" in res.metrics


def test_pretrain_rejects_unknown_architecture(tmp_path):
    with pytest.raises(AdvloraError, match="unknown model family 'vit'"):
        pretrain("vit", tmp_path / "m")


def test_models_never_train_the_tiny_defaults_the_layers_above_do(tmp_path, monkeypatch):
    """advlora.models only reads checkpoints: without a builder an uncached tiny-clip is one clear error; the
    declared builder is the training stage's pre-training, named by reference and imported when first needed."""
    import advlora
    from advlora.models import family as fam
    from advlora.models import load_model, resolve_model_path
    from advlora.training import pretrain as P

    monkeypatch.setenv("ADVLORA_HOME", str(tmp_path))
    assert fam.tiny_builder() is P.build_tiny            # the reference fam.TINY_BUILDER, resolved
    monkeypatch.setattr(fam, "_TINY_BUILDER", [])
    with pytest.raises(AdvloraError, match="tiny-clip is not pre-trained yet: run `advlora pretrain --arch clip`"):
        load_model("tiny-clip")
    monkeypatch.setattr(fam, "_TINY_BUILDER", [fam.TINY_BUILDER])
    built = []
    monkeypatch.setattr(P, "build_tiny", lambda arch, out: built.append((arch, out)))
    assert P.ensure_pretrained("tiny-blip") == str(tmp_path / "models" / "tiny-blip")
    assert resolve_model_path("tiny-siglip") == str(tmp_path / "models" / "tiny-siglip")
    assert built == [("blip", tmp_path / "models" / "tiny-blip"), ("siglip", tmp_path / "models" / "tiny-siglip")]
    assert resolve_model_path("some/hub-id") == "some/hub-id"
    assert advlora.load_model is load_model


def test_pretrain_progress_in_a_redirected_log_is_lines_not_a_bar(small_emoji, tmp_path, capsys, monkeypatch):
    """Off a terminal (a redirected log) the pre-training reports log lines (``BatchProgress``), no tqdm bar."""
    import advlora.progress

    monkeypatch.setattr(advlora.progress, "LOG_INTERVAL", 0.0)
    cfg = PretrainConfig(size="test", epochs=2, batch_size=8, vocab_size=120, lr=1e-3)
    pretrain("clip", tmp_path / "tiny-clip", config=cfg, train_data=small_emoji["train"],
             eval_data={"test": small_emoji["test"]}, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err
    lines = [line for line in err.splitlines() if line.startswith("pretrain tiny-clip")]
    assert lines[0].startswith("pretrain tiny-clip: step 1/2, ")
    assert lines[-1].startswith("pretrain tiny-clip: step 2/2")
    assert len(lines) == 2
