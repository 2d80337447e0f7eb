"""``check_dataset`` and ``advlora data check``: every problem listed, counts, exit 0 only when clean."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from advlora.cli import main
from advlora.data.check import CheckReport, check_dataset
from advlora.errors import AdvloraError


def _png(path, seed):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    Image.fromarray((torch.rand(12, 14, 3, generator=g) * 255).to(torch.uint8).numpy()).save(path)


def test_clean_set_is_ok_with_counts(image_text_folder, capsys):
    report = check_dataset(image_text_folder)
    assert isinstance(report, CheckReport) and report.ok and report.problems == []
    assert (report.n_items, report.n_captions, report.captions_per_item) == (6, 12, (2, 2.0, 2))
    assert report.lines()[0].endswith("6 images, 12 captions; captions per image min 2 / mean 2.00 / max 2")
    assert report.lines()[-1] == "ok"
    assert main(["data", "check", str(image_text_folder)]) == 0
    assert "6 images, 12 captions" in capsys.readouterr().out


def test_every_problem_is_listed(tmp_path, capsys):
    for i in range(4):
        _png(tmp_path / f"{i}.png", i)
    shutil.copy(tmp_path / "0.png", tmp_path / "copy.png")           # duplicate content
    (tmp_path / "bad.png").write_bytes(b"not a png at all")            # unreadable
    recs = [{"image": "0.png", "captions": ["zero", "nought", "nil"]},
            {"image": "1.png", "captions": ["one", "  "]},             # one empty caption
            {"image": "2.png"},                                        # missing key
            {"image": "copy.png", "captions": ["zero again"]},
            {"image": "bad.png", "captions": ["broken"]},
            {"image": "gone.png", "captions": ["missing"]},            # missing file
            {"image": "../out.png", "captions": ["outside"]}]          # outside the root
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(recs))
    report = check_dataset(path)
    assert not report.ok
    assert report.n_items == 5 and report.n_captions == 7  # the 5 usable records' good captions
    assert report.captions_per_item == (1, 7 / 5, 3)
    assert report.missing == [str(tmp_path / "gone.png")]
    assert len(report.unreadable) == 1 and "bad.png: cannot read image" in report.unreadable[0]
    assert report.duplicates == [[str(tmp_path / "0.png"), str(tmp_path / "copy.png")]]
    text = "\n".join(report.annotation_problems)
    assert "record 2 (1.png) has an empty caption" in text
    assert "record 3 is missing the key 'captions'" in text
    assert "outside the data root" in text
    assert len(report.problems) == 6 and report.lines()[-1] == "6 problems"
    assert main(["data", "check", str(path)]) != 0
    assert "gone.png: image file is missing" in capsys.readouterr().out


def test_unreadable_annotation_file_is_one_problem(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    report = check_dataset(tmp_path / "x.json")
    assert not report.ok and len(report.problems) == 1 and "not valid JSON" in report.problems[0]
    with pytest.raises(AdvloraError, match="nothing.json: no such file and not an embedded data set"):
        check_dataset(tmp_path / "nothing.json")   # bad input (exit 2), not a problem found by a check


@pytest.mark.parametrize("fmt_file", ["karpathy", "coco-json", "flickr-txt"])
def test_standard_formats_report_missing_images(tmp_path, fmt_file):
    _png(tmp_path / "a.jpg", 0)
    if fmt_file == "karpathy":
        path = tmp_path / "dataset_flickr30k.json"
        path.write_text(json.dumps({"images": [
            {"filename": name, "split": "test", "sentences": [{"raw": f"{name} {j}"} for j in range(5)]}
            for name in ("a.jpg", "b.jpg")]}))
    elif fmt_file == "coco-json":
        path = tmp_path / "coco_test_karpathy.json"
        path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
                                    "annotations": [{"image_id": i, "caption": f"c{i}{j}"} for i in (1, 2)
                                                    for j in range(5)]}))
    else:
        path = tmp_path / "flickr30k_test_karpathy.txt"
        rows = (f"{n},cap {n} {j}\n" for n in ("a.jpg", "b.jpg") for j in range(5))
        path.write_text("image,caption\n" + "".join(rows))
    report = check_dataset(path)
    assert report.fmt == fmt_file
    assert (report.n_items, report.n_captions, report.captions_per_item) == (2, 10, (5, 5.0, 5))
    assert report.missing == [str(tmp_path / "b.jpg")] and len(report.problems) == 1


def test_check_inputs_finds_a_missing_split_file_or_corrupt_sample_before_work(image_text_folder, tmp_path):
    from advlora.data.check import check_inputs

    got = check_inputs(str(image_text_folder), ["train", "test"])
    assert set(got) == {"train", "test"} and len(got["test"]) == 6
    karpathy = {"images": [{"split": "test", "filename": "img0.png", "sentences": [{"raw": "a"}]}]}
    (image_text_folder.parent / "k.json").write_text(json.dumps(karpathy))  # a test split, no train split
    assert set(check_inputs(str(image_text_folder.parent / "k.json"), ["test"])) == {"test"}
    with pytest.raises(AdvloraError, match=r"^split 'train': .*k.json: no images in split 'train'$"):
        check_inputs(str(image_text_folder.parent / "k.json"), ["test", "train"])
    (image_text_folder.parent / "img3.png").unlink()
    with pytest.raises(AdvloraError, match=r"^split 'test': 1 of 6 image files are missing, the first: .*img3.png$"):
        check_inputs(str(image_text_folder), ["test"])
    shutil.copy(image_text_folder.parent / "img1.png", image_text_folder.parent / "img3.png")
    (image_text_folder.parent / "img0.png").write_bytes(b"broken")
    with pytest.raises(AdvloraError, match=r"^split 'test': .*img0.png: cannot read image"):
        check_inputs(str(image_text_folder), ["test"])
    with pytest.raises(AdvloraError, match=r"nowhere.jsonl': no such file"):
        check_inputs(str(tmp_path / "nowhere.jsonl"), ["test"])
