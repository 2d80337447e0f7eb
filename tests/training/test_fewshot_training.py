"""Training on class folders: the k-shot sample, the class-prompt classifier and TeCoA's cross-entropy."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from advlora.cli import main
from advlora.data import load_dataset
from advlora.data.fewshot import few_shot
from advlora.training.config import AttackConfig, load_run_config
from advlora.training.step import Dist, TrainTask, class_positives
from advlora.training.trainer import train

CLASSES = ("red_apple", "green_leaf", "blue_sky")


@pytest.fixture
def class_folder(tmp_path):
    """train/ and test/ splits of 3 classes (5 and 2 images each), one template."""
    g = torch.Generator().manual_seed(0)
    root = tmp_path / "cls"
    for split, n in (("train", 5), ("val", 2), ("test", 2)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                arr = (torch.rand(12, 12, 3, generator=g) * 80).to(torch.uint8)
                arr[..., c] += 150
                Image.fromarray(arr.numpy()).save(folder / f"{i}.png")
    (root / "templates.txt").write_text("a photo of a {}.\n")
    return root


class FixedFeatures(torch.nn.Module):
    """A model whose image feature is the image's first two pixel values (unit norm), logit scale 100."""

    has_itm = False

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(100.0))

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return F.normalize(images.flatten(1)[:, :2], dim=-1)

    def contrastive_loss(self, *args):   # the retrieval form: never called on classification data
        raise AssertionError("classification data must not use the symmetric contrastive loss")


def test_tecoa_on_classes_is_the_cross_entropy_of_the_class_prompt_logits():
    # image 0 has feature e0 and class 0 (logits 100, 0): CE log(1 + e^-100); image 1 has feature e1 but class
    # 0 (logits 0, 100): CE 100 + log(1 + e^-100). The mean is 50 + log(1 + e^-100).
    images = torch.zeros(2, 1, 1, 2)
    images[0, 0, 0, 0] = images[1, 0, 0, 1] = 1.0
    images.requires_grad_(True)
    classes = torch.eye(2)
    positives = class_positives(torch.tensor([0, 0]), 2)
    task = TrainTask(FixedFeatures(), AttackConfig(name="none"), Dist(), objective="tecoa", classes=True)
    backward, report, parts = task(images, images, None, classes, positives)
    expected = 50 + math.log1p(math.exp(-100))
    assert float(report.detach()) == pytest.approx(expected, rel=1e-6)
    assert parts["itc"] == pytest.approx(expected, rel=1e-6)
    backward.backward()
    assert images.grad.abs().sum() > 0                  # the loss reaches the image side
    assert task.model.logit_scale.grad is None          # the logit scale stays as it is


def test_fap_on_classes_is_clean_cross_entropy_plus_the_weighted_kl():
    g = torch.Generator().manual_seed(0)
    clean, adv = torch.rand(3, 1, 1, 2, generator=g), torch.rand(3, 1, 1, 2, generator=g)
    classes = F.normalize(torch.rand(2, 2, generator=g), dim=-1)
    labels = torch.tensor([0, 1, 1])
    config = AttackConfig(name="pgd", beta=1.5)
    task = TrainTask(FixedFeatures(), config, Dist(), objective="fap", classes=True)
    _, report, parts = task(clean, adv, None, classes, class_positives(labels, 2))
    fc, fa = F.normalize(clean.flatten(1), dim=-1), F.normalize(adv.flatten(1), dim=-1)
    out_clean, out_adv = 100 * fc @ classes.t(), 100 * fa @ classes.t()
    kl = F.kl_div(F.log_softmax(out_adv, 1), F.softmax(out_clean, 1), reduction="none").sum(-1)   # FAP's code
    expected = F.cross_entropy(out_clean, labels) + 1.5 * torch.mean(kl * (F.cosine_similarity(fc, fa) + 1))
    assert float(report.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert parts["itc"] == pytest.approx(float(F.cross_entropy(out_clean, labels)), rel=1e-5)


def test_pmg_aft_on_classes_is_the_authors_loss():
    g = torch.Generator().manual_seed(1)
    clean, adv = torch.rand(3, 1, 1, 2, generator=g), torch.rand(3, 1, 1, 2, generator=g)
    original = F.normalize(torch.rand(3, 2, generator=g), dim=-1)      # the original model's features of adv
    classes = F.normalize(torch.rand(2, 2, generator=g), dim=-1)
    labels = torch.tensor([1, 0, 1])
    task = TrainTask(FixedFeatures(), AttackConfig(name="pgd"), Dist(), objective="pmg-aft", classes=True)
    _, report, parts = task(clean, adv, None, classes, class_positives(labels, 2), reference=original)
    fc, fa = F.normalize(clean.flatten(1), dim=-1), F.normalize(adv.flatten(1), dim=-1)
    output, output_clean, output_ori = 100 * fa @ classes.t(), 100 * fc @ classes.t(), 100 * original @ classes.t()
    kl = torch.nn.KLDivLoss(reduction="sum")                                        # PMG_AFT.py, train()
    expected = (F.cross_entropy(output, labels) + kl(F.log_softmax(output, 1), F.softmax(output_clean, 1))
                + kl(F.log_softmax(output, 1), F.softmax(output_ori, 1)))
    assert float(report.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert parts["kl_original"] > 0


def test_pmg_aft_reads_the_original_model_on_the_adversarial_images(class_folder, tmp_path):
    # at the first step LoRA's B is zero: the model is the original one, so on the same (adversarial) images the
    # KL to the original model is 0 while the clean-to-adversarial KL is not
    import csv

    cfg = _config(class_folder, "lora", steps=1, shots=2)
    cfg.train.objective = "pmg-aft"
    cfg.attack.threat = cfg.attack.threat.replace(eps=16 / 255, steps=2)
    train(cfg, tmp_path / "run")
    row = next(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    loss, itc, kl = float(row["loss"]), float(row["itc"]), float(row["kl"])
    assert kl > 1e-4
    assert loss - itc - kl == pytest.approx(0.0, abs=1e-5)


def _config(folder, method: str, steps: int = 2, **data):
    return load_run_config(overrides={
        "model": {"random": "clip:test"}, "adapter": {"method": method},
        "data": {"name": str(folder), **data},
        "train": {"steps": steps, "batch_size": 6, "device": "cpu", "progress": "off", "tensorboard": False,
                  "objective": "tecoa", "lr": 0.05, "warmup": 0},
        "attack": {"steps": 1},
        "eval": {"val_limit": 6, "test_limit": 6, "test_steps": 1, "robust": False}})


def test_tecoa_on_classes_leaves_the_text_tower_unchanged(class_folder, tmp_path):
    # LoRA adapts both towers; TeCoA's class embeddings are fixed, so only the image tower's adapter moves
    train(_config(class_folder, "lora", shots=2), tmp_path / "run")
    weights = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    text = {k: v for k, v in weights.items() if "text_model" in k and "lora_B" in k}
    vision = {k: v for k, v in weights.items() if "vision_model" in k and "lora_B" in k}
    assert text and vision
    assert all(torch.count_nonzero(v) == 0 for v in text.values())      # B starts at zero: no update reached it
    assert any(torch.count_nonzero(v) > 0 for v in vision.values())     # the image tower did train


def test_cli_trains_on_a_class_folder_with_shots_and_records_them(class_folder, tmp_path, capsys):
    outs = {}
    for method in ("lora", "advlora"):
        out = tmp_path / method
        code = main(["train", "--random-model", "clip:test", "--method", method, "--objective", "tecoa",
                     "--data", str(class_folder), "--shots", "2", "--shot-seed", "3", "--steps", "1",
                     "--batch-size", "6", "--attack-steps", "1", "--device", "cpu", "--progress", "off",
                     "--out", str(out), "--eval.val_limit", "6", "--eval.test_limit", "6",
                     "--eval.test_steps", "1", "--train.tensorboard", "false"])
        assert code == 0
        outs[method] = json.loads((out / "fewshot.json").read_text())
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["n_images"] == 6 and metrics["n_texts"] == len(CLASSES)   # the held-out test split
    record = outs["lora"]
    assert record == outs["advlora"]                       # the same images for every method
    assert record["shots"] == 2 and record["seed"] == 3 and len(record["images"]) == 2 * len(CLASSES)
    train_split = load_dataset(str(class_folder), "train")
    assert record["images"] == [train_split.images[i] for i in few_shot(train_split, 2, 3)]
    assert sorted(record["labels"]) == sorted([n.replace("_", " ") for n in CLASSES] * 2)


def test_few_shot_training_resumes_bit_for_bit(class_folder, tmp_path):
    def config():
        cfg = _config(class_folder, "lora", steps=3, shots=2)
        cfg.train.checkpoint_every, cfg.train.batch_size = 1, 3
        return cfg

    ref = train(config(), tmp_path / "ref")

    def cut(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(), tmp_path / "cut", on_step=cut)
    train(config(), tmp_path / "cut", resume=True)
    name = "adapter/adapter_model.safetensors"
    a, b = load_file(str(ref.run_dir / name)), load_file(str(tmp_path / "cut" / name))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert (tmp_path / "cut" / "fewshot.json").read_text() == (ref.run_dir / "fewshot.json").read_text()


def test_shots_need_a_classification_set(image_text_folder, tmp_path):
    from advlora.errors import AdvloraError

    with pytest.raises(AdvloraError, match="not a classification set"):
        train(_config(image_text_folder, "lora", shots=2), tmp_path / "run")
