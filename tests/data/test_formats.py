"""Standard image-text annotation formats: files of the real shapes, written here, give the expected counts."""
from __future__ import annotations

import json

import pytest

from advlora.data import load_dataset
from advlora.data.formats import FORMATS, detect_format, read_annotations
from advlora.data.records import collecting_problems
from advlora.errors import AdvloraError


def _karpathy(n_test: int, *, coco: bool = True, extra: int = 0) -> dict:
    """A Karpathy ``dataset_*.json``: n_test test images with 5 sentences (``extra`` of them with 7),
    plus 3 train, 2 restval and 4 val images."""
    images, sid = [], 0
    splits = ["test"] * n_test + ["train"] * 3 + ["restval"] * 2 + ["val"] * 4
    for i, split in enumerate(splits):
        k = 7 if (split == "test" and i < extra) else 5
        sents = [{"raw": f"Image {i} sentence {j}.", "tokens": [], "sentid": sid + j} for j in range(k)]
        sid += k
        im = {"filename": f"COCO_val2014_{i:012d}.jpg" if coco else f"{1000 + i}.jpg", "imgid": i,
              "split": split, "sentences": sents, "sentids": [s["sentid"] for s in sents]}
        if coco:
            im["filepath"], im["cocoid"] = ("val2014" if split != "train" else "train2014"), i
        images.append(im)
    return {"images": images, "dataset": "coco" if coco else "flickr30k"}


def test_karpathy_coco_5k_test_split_counts_without_images(tmp_path):
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(_karpathy(5000, extra=10)))
    assert detect_format(path) == "karpathy"
    ds = read_annotations(path)  # no image exists: counting must not open them
    assert (len(ds), len(ds.captions)) == (5000, 25000)
    assert ds.images[0] == "val2014/COCO_val2014_000000000000.jpg"
    assert ds.captions[:2] == ["Image 0 sentence 0.", "Image 0 sentence 1."]
    assert ds.meta["captions_dropped"] == 20  # 10 images had 7 sentences: the protocol keeps 5
    assert ds.img2txt[0] == [0, 1, 2, 3, 4]


def test_karpathy_splits_train_includes_restval(tmp_path):
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(_karpathy(6)))
    train = read_annotations(path, split="train")
    assert len(train) == 5 and train.images[0].startswith("train2014/") and train.images[3].startswith("val2014/")
    assert len(read_annotations(path, split="restval")) == 2
    assert (len(read_annotations(path, split="val")), len(read_annotations(path, split="val").captions)) == (4, 20)
    with pytest.raises(AdvloraError, match="unknown split of dataset_coco.json 'dev'"):
        read_annotations(path, split="dev")


def test_karpathy_flickr30k_1k_test(tmp_path):
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps(_karpathy(1000, coco=False)))
    ds = read_annotations(path)
    assert (len(ds), len(ds.captions)) == (1000, 5000)
    assert ds.images[0] == "1000.jpg"


def test_image_root_resolves_karpathy_paths(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "coco").mkdir()
    path = tmp_path / "ann" / "dataset_coco.json"
    path.write_text(json.dumps(_karpathy(2)))
    ds = load_dataset(str(path), image_root=tmp_path / "coco")
    assert ds.image_path(0) == tmp_path / "coco" / "val2014" / "COCO_val2014_000000000000.jpg"
    assert read_annotations(path).image_path(0).parent.parent == tmp_path / "ann"
    with pytest.raises(AdvloraError, match="--image-root .*nowhere: no such folder"):
        read_annotations(path, image_root=tmp_path / "nowhere")


def test_karpathy_missing_key_is_one_line_naming_the_file(tmp_path):
    data = _karpathy(3)
    del data["images"][1]["sentences"]
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AdvloraError, match=r"dataset_coco.json: image 2 is missing the key 'sentences'"):
        read_annotations(path)
    with collecting_problems() as problems:
        ds = read_annotations(path)
    assert len(ds) == 2 and problems == [f"{path}: image 2 is missing the key 'sentences'"]


def _coco_captions(n: int, per: int = 5) -> dict:
    images = [{"id": 100 + i, "file_name": f"COCO_val2014_{100 + i:012d}.jpg", "height": 8, "width": 8}
              for i in range(n)]
    anns = [{"id": k, "image_id": 100 + i, "caption": f"photo {i} caption {j}"}
            for k, (i, j) in enumerate((i, j) for j in range(per) for i in range(n))]
    return {"images": images, "annotations": anns, "info": {}, "licenses": []}


def test_clip_benchmark_coco_json_5k_and_val2014_folder(tmp_path):
    path = tmp_path / "coco_test_karpathy.json"
    path.write_text(json.dumps(_coco_captions(5000)))
    assert detect_format(path) == "coco-json"
    ds = read_annotations(path)
    assert (len(ds), len(ds.captions)) == (5000, 25000)
    assert ds.img2txt[0] == [0, 1, 2, 3, 4]  # annotations interleaved in the file, grouped by image
    assert [ds.captions[j] for j in ds.img2txt[1]] == [f"photo 1 caption {j}" for j in range(5)]
    # CLIP_benchmark's layout: images in <root>/val2014 next to the annotation file
    small = tmp_path / "small"
    (small / "val2014").mkdir(parents=True)
    (small / "val2014" / "COCO_val2014_000000000100.jpg").write_bytes(b"x")
    (small / "coco_test_karpathy.json").write_text(json.dumps(_coco_captions(2)))
    assert read_annotations(small / "coco_test_karpathy.json").root == small / "val2014"


def test_clip_benchmark_coco_json_bad_annotation(tmp_path):
    data = _coco_captions(2)
    data["annotations"].append({"id": 99, "image_id": 7, "caption": "orphan"})
    data["annotations"].append({"id": 98, "caption": "no image id"})
    path = tmp_path / "coco_test_karpathy.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AdvloraError, match="annotation 11 names image_id 7"):
        read_annotations(path)
    with collecting_problems() as problems:
        assert len(read_annotations(path).captions) == 10
    assert len(problems) == 2


def test_clip_benchmark_flickr_txt_1k(tmp_path):
    lines = ["image,caption"]
    for i in range(1000):
        lines += [f"{1000 + i}.jpg,A man, a dog, and a ball number {i}-{j}." for j in range(5)]
    path = tmp_path / "flickr30k_test_karpathy.txt"
    path.write_text("\n".join(lines) + "\n")
    assert detect_format(path) == "flickr-txt"
    ds = read_annotations(path)
    assert (len(ds), len(ds.captions)) == (1000, 5000)
    assert ds.images[0] == "1000.jpg" and ds.captions[0] == "A man, a dog, and a ball number 0-0."


def test_flickr_token_file_and_bad_line(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("1.jpg#0\tTwo dogs.\n1.jpg#1\tDogs, two.\n2.jpg#0\tA cat.\nnot a pair\n")
    with pytest.raises(AdvloraError, match="results.txt: line 4 is not"):
        read_annotations(path)
    with collecting_problems():
        ds = read_annotations(path)
    assert ds.images == ["1.jpg", "2.jpg"] and ds.captions == ["Two dogs.", "Dogs, two.", "A cat."]


def test_lavis_test_and_train_files(tmp_path):
    test = [{"image": f"val2014/COCO_val2014_{i:012d}.jpg", "caption": [f"c{i}.{j}" for j in range(5)]}
            for i in range(4)]
    train = [{"image": f"train2014/{i % 3}.jpg", "caption": f"t{i}", "image_id": f"coco_{i % 3}"} for i in range(7)]
    (tmp_path / "coco_karpathy_test.json").write_text(json.dumps(test))
    (tmp_path / "coco_karpathy_train.json").write_text(json.dumps(train))
    for name in ("json", "lavis"):
        ds = read_annotations(tmp_path / "coco_karpathy_test.json", name)
        assert (len(ds), len(ds.captions)) == (4, 20)
    assert detect_format(tmp_path / "coco_karpathy_test.json") == "json"
    tr = read_annotations(tmp_path / "coco_karpathy_train.json", "lavis")
    assert len(tr) == 3 and tr.img2txt[0] == [0, 3, 6]  # repeated images merge


def test_generic_formats_and_outside_root(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"image": "x.png", "captions": ["one", "two"]}\n'
                                      '{"image": "../y.png", "captions": ["three"]}\n')
    with pytest.raises(AdvloraError, match="outside the data root"):
        read_annotations(tmp_path / "a.jsonl")
    (tmp_path / "b.csv").write_text("image,caption\nx.png,one\nx.png,two\ny.png,three\n")
    ds = read_annotations(tmp_path / "b.csv")
    assert (len(ds), len(ds.captions)) == (2, 3)


def test_registry_and_unknown_format(tmp_path):
    assert {"karpathy", "coco-json", "flickr-txt", "lavis", "video-jsonl", "didemo", "msrvtt"} <= set(FORMATS)
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(AdvloraError, match="unknown annotation format 'kaparthy'"):
        read_annotations(tmp_path / "x.json", "kaparthy")
    with pytest.raises(AdvloraError, match="is a folder"):
        read_annotations(tmp_path)


def test_a_new_format_is_one_declaration(tmp_path):
    """A format is a reader and a detector declared once; registering it makes load_dataset read it."""
    import dataclasses

    from advlora.data import formats
    from advlora.data.records import Format, image_root_of, read_text, records_to_dataset

    def read_pairs(path, split=None, image_root=None):  # "<image> :: <caption>" lines
        recs = [tuple(line.split(" :: ", 1)) for line in read_text(path).splitlines() if line.strip()]
        return records_to_dataset([(im, [cap]) for im, cap in recs], image_root_of(path, image_root), "pairs", path)

    pairs = Format("pairs", read_pairs, lambda path, head: " :: " in head.split("\n", 1)[0])
    path = tmp_path / "ann.txt"  # a .txt the content-based detector must claim before flickr-txt
    path.write_text("a.png :: a red apple\nb.png :: a dog face\na.png :: an apple\n")
    with pytest.raises(AdvloraError):
        load_dataset(str(path))  # unknown to the shipped formats: flickr-txt cannot read it
    with formats.registered(pairs, first=True):
        assert detect_format(path) == "pairs" and list(FORMATS)[0] == "pairs"
        ds = load_dataset(str(path))
        assert ds.images == ["a.png", "b.png"] and ds.captions == ["a red apple", "a dog face", "an apple"]
        assert load_dataset(str(path), fmt="pairs").img2txt == [[0, 2], [1]]
        with pytest.raises(AdvloraError, match="annotation format 'pairs' is declared twice"):
            formats.register_format(dataclasses.replace(pairs, doc="another reader under the same name"))
    assert "pairs" not in FORMATS and detect_format(path) == "flickr-txt"
