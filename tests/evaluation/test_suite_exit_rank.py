"""The suite's exit rank follows the task: a set whose gallery cannot let an image miss the largest reported k
exits at the largest k it can miss (a 7-class set at 5, a set of at most 5 classes at 1), records it, and
stops attacking images done there."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from train_utils import write_data

from advlora.attacks import ThreatModel, registry
from advlora.attacks.registry import AttackSpec, SuiteMember
from advlora.data import load_dataset
from advlora.evaluation import robust as R
from advlora.evaluation.tasks import exit_rank

SMALL = AttackSpec("standard-cls-tiny", "suite", None, uses=("norm", "eps", "seed"), label="standard-cls-tiny",
                   checks=("bounds",),
                   members=(SuiteMember("apgd-ce", "apgd", objective="contrastive", changes={"steps": 3}),
                            SuiteMember("apgd-t", "apgd-t", changes={"steps": 2}, options={"targets": 2}),
                            SuiteMember("square", "square", objective="margin", options={"queries": 10})))


def _classes(root, n_classes: int, per: int = 2):
    """A class-folder set of ``n_classes`` classes, ``per`` random 12x12 images each."""
    g = torch.Generator().manual_seed(n_classes)
    words = ["dog", "cat", "car", "tree", "house", "boat", "bird", "fish", "apple", "horse", "rocket", "sun"]
    for c in range(n_classes):
        d = root / words[c]
        d.mkdir(parents=True)
        for k in range(per):
            arr = (torch.rand(12, 12, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(d / f"{k}.png")
    return load_dataset(str(root))


@pytest.mark.parametrize("n_classes, asked, want", [(7, 10, 5), (7, 3, 3), (7, 1, 1), (5, 10, 1), (2, 10, 1),
                                                     (12, 10, 10), (11, 10, 10), (10, 10, 5)])
def test_exit_rank_is_the_largest_reported_k_the_classes_let_an_image_miss(tmp_path, n_classes, asked, want):
    assert exit_rank(_classes(tmp_path, n_classes, per=1), asked) == want


def test_retrieval_keeps_the_asked_rank_unless_its_gallery_is_smaller(tmp_path):
    assert exit_rank(load_dataset(str(write_data(tmp_path / "a", n=8))), 10) == 10     # 14 negatives each
    assert exit_rank(load_dataset(str(write_data(tmp_path / "b", n=4))), 10) == 5      # 6 negatives each


def test_a_seven_class_suite_exits_at_rank_five_and_stops_there(tmp_path, tiny_clip):
    data = _classes(tmp_path, 7)
    with registry.registered(SMALL):
        early = R.evaluate_robust(tiny_clip, data, [SMALL.name], ThreatModel(eps="16/255"), batch_size=7,
                                  sanity=False)
        full = R.evaluate_robust(tiny_clip, data, [SMALL.name], ThreatModel(eps="16/255"), batch_size=7,
                                 sanity=False, exhaustive=True)
    assert early["suite_exit_k"] == 5
    a, b = early["attacks"][SMALL.name], full["attacks"][SMALL.name]
    assert "done at i2t rank >= 5" in a.threat
    assert a.metrics["top1"] == b.metrics["top1"] and a.metrics["top5"] == b.metrics["top5"]
    assert [min(r, 5) for r in a.ranks["i2t"]] == [min(r, 5) for r in b.ranks["i2t"]]
    attacked = [early["attacks"][f"{SMALL.name}/{m.label}"].attacked for m in SMALL.members]
    assert attacked[-1] < len(data), attacked      # images were done at rank 5: later members skipped them
