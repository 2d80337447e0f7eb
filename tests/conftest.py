"""Shared fixtures: tiny random models and small data sets written by the tests; no network."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread: the test models are tiny, and on a shared 2-core machine spinning threads cost more
# than they give.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Each test caches into its own ADVLORA_HOME unless it sets one."""
    monkeypatch.setenv("ADVLORA_HOME", str(tmp_path_factory.mktemp("advlora_home")))


@pytest.fixture(scope="session")
def tiny_clip():
    from advlora.models.tiny import random_model

    return random_model("clip", "test", seed=0)


@pytest.fixture(scope="session")
def tiny_blip():
    from advlora.models.tiny import random_model

    return random_model("blip", "test", seed=0)


@pytest.fixture
def image_text_folder(tmp_path):
    """A folder of 6 small PNGs and a JSONL annotation file with 2 captions each."""
    import json

    from PIL import Image

    g = torch.Generator().manual_seed(0)
    recs = []
    for i in range(6):
        arr = (torch.rand(20, 24, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(tmp_path / f"img{i}.png")
        recs.append({"image": f"img{i}.png", "captions": [f"picture number {i}", f"image {i} of a thing"]})
    ann = tmp_path / "ann.jsonl"
    ann.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return ann
