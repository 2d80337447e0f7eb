"""`advlora train` and `advlora eval` check every split and file they will read before any work."""
from __future__ import annotations

import json

from advlora.cli import main


def _folder(tmp_path, splits=("train", "val")):
    """Six images and a Karpathy-format annotation (the format with splits) using only ``splits``."""
    import torch
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    images = []
    for i in range(6):
        Image.fromarray((torch.rand(16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()).save(tmp_path / f"{i}.png")
        images.append({"filepath": "", "filename": f"{i}.png", "split": splits[i % len(splits)],
                       "sentences": [{"raw": f"picture number {i}"}]})
    ann = tmp_path / "dataset_coco.json"
    ann.write_text(json.dumps({"images": images}))
    return ann


def test_train_without_a_test_split_stops_before_the_first_step(tmp_path, capsys):
    ann = _folder(tmp_path)
    out = tmp_path / "run"
    rc = main(["train", "--data", str(ann), "--method", "advlora", "--steps", "2", "--batch-size", "2",
               "--out", str(out), "--model.random", "clip:test"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "split 'test'" in err[0], err
    assert not out.exists()                                  # no run folder, no step taken


def test_eval_with_a_missing_image_names_it_before_the_model_loads(tmp_path, capsys):
    ann = _folder(tmp_path, splits=("test",))
    (tmp_path / "3.png").unlink()
    rc = main(["eval", "--model", "no/such-model", "--data", str(ann), "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "3.png" in err[0], err   # the data, not the missing model, is named


def test_train_from_shards_needs_an_eval_set_and_checks_it_before_work(tmp_path, capsys):
    ann = _folder(tmp_path, splits=("train", "val", "test"))
    assert main(["data", "shard", str(ann), "--split", "train", "--out", str(tmp_path / "shards"),
                 "--per-shard", "1", "--progress", "off"]) == 0
    shards = str(tmp_path / "shards" / "shard-{00000..00001}.tar")
    capsys.readouterr()
    base = ["train", "--data", shards, "--steps", "1", "--batch-size", "2", "--model.random", "clip:test"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert "names training shards: set data.eval_name (--eval-data)" in capsys.readouterr().err
    assert main([*base, "--eval-data", str(tmp_path / "missing.json"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"advlora train: error: --eval-data {tmp_path / 'missing.json'}: ")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b" / "checkpoints").exists()
