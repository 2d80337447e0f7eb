"""Model files: save_model / load_model through transformers' classes, and what ``name_or_path`` names."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

from advlora.io import advlora_home
from advlora.models import load_model, save_model
from advlora.models.tiny import random_model


@pytest.mark.parametrize("arch", ["clip", "blip"])
def test_save_then_load_round_trips_through_the_processor_class(arch, tmp_path):
    model = random_model(arch, "test", seed=1)
    model.mean.copy_(torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1))  # not the defaults: the file must carry it
    save_model(model, tmp_path / "m")
    written = json.loads((tmp_path / "m" / "preprocessor_config.json").read_text())
    assert written["image_processor_type"] == {"clip": "CLIPImageProcessor", "blip": "BlipImageProcessor"}[arch]
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "m", trust_remote_code=False)
    assert processor.size.height == model.image_size and list(processor.image_mean) == pytest.approx(
        model.mean.flatten().tolist())
    loaded = load_model(str(tmp_path / "m"))
    assert (loaded.arch, loaded.image_size) == (arch, model.image_size)
    assert torch.equal(loaded.mean, model.mean) and torch.equal(loaded.std, model.std)
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(images), model.encode_image(images), atol=1e-6)
    assert loaded.name_or_path == loaded.alias == str(tmp_path / "m")


def test_a_hub_style_clip_processor_file_is_read_by_the_same_call(tmp_path):
    """A hub CLIP checkpoint resizes the shorter side then centre-crops: the crop is the model's input size."""
    save_model(random_model("clip", "test"), tmp_path / "m")
    hub = transformers.CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 40, "width": 40},
                                          image_mean=[0.5, 0.25, 0.125], image_std=[0.2, 0.3, 0.4])
    hub.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.image_size == 40
    assert loaded.mean.flatten().tolist() == [0.5, 0.25, 0.125]
    assert loaded.std.flatten().tolist() == pytest.approx([0.2, 0.3, 0.4])


def test_a_folder_without_processor_file_uses_the_vision_config(tmp_path):
    model = random_model("clip", "test")
    save_model(model, tmp_path / "m")
    (tmp_path / "m" / "preprocessor_config.json").unlink()
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.image_size == model.hf_model.config.vision_config.image_size
    assert torch.allclose(loaded.mean, model.mean)


def test_name_or_path_is_what_from_pretrained_reads_and_alias_the_name_asked_for():
    folder = advlora_home() / "models" / "tiny-clip"  # a cached tiny default (ADVLORA_HOME is per test)
    save_model(random_model("clip", "test"), folder)
    model = load_model("tiny-clip")
    assert model.alias == "tiny-clip" and model.name_or_path == str(folder)
    again = transformers.CLIPModel.from_pretrained(model.name_or_path)
    assert torch.equal(again.logit_scale, model.hf_model.logit_scale)
    assert load_model(model.name_or_path).alias == str(folder)
    built = random_model("blip", "test")
    assert (built.name_or_path, built.alias) == ("", "random-blip-test")
