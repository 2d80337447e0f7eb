"""advlora.training.objectives: every objective a declaration; FARE's loss, attack and original model; TeCoA as
the adversarial training it names, bit for bit; caption-free training from a folder of images."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from train_utils import tiny_config, write_data

from advlora.adapters import attach_adapter
from advlora.attacks import ThreatModel
from advlora.errors import AdvloraError
from advlora.losses import contrastive_loss, per_image_contrastive
from advlora.models.tiny import random_model
from advlora.training import load_run_config, objectives, train
from advlora.training.config import AttackConfig
from advlora.training.objectives.fare import squared_distance
from advlora.training.reference import OriginalModel
from advlora.training.step import Dist, TrainTask, attack_batch


@pytest.fixture
def ann(tmp_path):
    return write_data(tmp_path / "data", n=8)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _adapted(method: str, **options):
    base = random_model("clip", "test", seed=0).requires_grad_(False)
    model = random_model("clip", "test", seed=0).requires_grad_(False)
    if method != "frozen":
        attach_adapter(model, method, rank=2, towers="vision", **options)
    return base, model


def _nudge(model) -> None:
    """Move every trainable tensor a little: a model that is no longer the original one."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("method,shared", [("lora", True), ("full", False), ("pissa", False), ("advlora", False),
                                           ("dora", True), ("vera", False), ("ia3", False)])
def test_fare_loss_is_zero_for_the_unmodified_model_and_matches_its_formula(method, shared):
    base, model = _adapted(method)
    ref = OriginalModel(model, lambda: base)
    assert ref.shared == shared          # lora: the adapters switched off; else a frozen copy of the base
    clean = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    task = TrainTask(model, AttackConfig(), Dist(), objective="fare")
    phi0 = ref.encode_image(clean)
    _, report, parts = task(clean, clean, None, None, torch.eye(4, dtype=torch.bool), reference=phi0)
    report = report.detach()
    if method in ("lora", "full"):
        assert float(report) == 0.0 and parts["fare"] == 0.0           # the very same weights
    else:                                 # W0 - B0 A0 + B0 A0: zero up to float rounding
        assert abs(float(report)) < 1e-8
    _nudge(model)
    adv = (clean + 4 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    _, report, parts = task(clean, adv, None, None, torch.eye(4, dtype=torch.bool), reference=ref.encode_image(clean))
    report = report.detach()
    with torch.no_grad():
        want = ((model.encode_image(adv, normalize=False) - base.encode_image(clean, normalize=False)) ** 2
                ).sum(dim=1).mean()
    assert float(want) > 0 and math.isclose(float(report), float(want), rel_tol=1e-5)
    assert math.isclose(parts["fare"], float(want), rel_tol=1e-5)


def test_adapters_off_gives_the_original_features_and_restores_the_adapter():
    base, model = _adapted("lora")
    _nudge(model)
    x = torch.rand(3, 3, 32, 32)
    ref = OriginalModel(model, lambda: pytest.fail("no copy is needed for lora"))
    before = model.encode_image(x, normalize=False)
    assert torch.equal(ref.encode_image(x), base.encode_image(x, normalize=False))
    assert torch.equal(model.encode_image(x, normalize=False), before)        # switched back on after
    assert not torch.equal(before, base.encode_image(x, normalize=False))
    zero_alpha = OriginalModel(_adapted("advlora", mode="zero_alpha", init="cluster")[1], lambda: base)
    assert zero_alpha.shared                                                   # base weights left as loaded


def test_fare_attack_increases_the_embedding_distance():
    base, model = _adapted("lora")
    _nudge(model)
    clean = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    phi0 = OriginalModel(model, lambda: base).encode_image(clean)
    cfg = AttackConfig(threat=ThreatModel(eps="8/255", steps=5))
    adv = attack_batch(model, cfg, clean, None, torch.eye(6, dtype=torch.bool), torch.Generator().manual_seed(0),
                       objective="fare", reference=phi0)
    assert (adv - clean).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        d_clean = squared_distance(model.encode_image(clean, normalize=False), phi0)
        d_adv = squared_distance(model.encode_image(adv, normalize=False), phi0)
        noise = (clean + 8 / 255 * torch.empty_like(clean).uniform_(-1, 1)).clamp(0, 1)
        d_noise = squared_distance(model.encode_image(noise, normalize=False), phi0)
    assert bool((d_adv > d_clean).all()) and float(d_adv.mean()) > float(d_noise.mean())


def test_tecoa_step_is_todays_adversarial_training_bit_for_bit():
    """The tecoa objective's attack and loss, against the adversarial training step written out by hand:
    PGD on each image's image-to-text cross-entropy, then the symmetric contrastive loss on its output."""
    from advlora.attacks import ATTACKS
    from advlora.runtime import eval_mode

    grads = []
    for by_hand in (True, False):
        _, model = _adapted("lora")
        model.train()
        clean = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
        text = torch.nn.functional.normalize(torch.randn(4, 32, generator=torch.Generator().manual_seed(6)), dim=-1)
        pos = torch.eye(4, dtype=torch.bool)
        cfg = AttackConfig(threat=ThreatModel(eps="4/255", steps=3))
        gen = torch.Generator().manual_seed(7)
        if by_hand:
            with eval_mode(model):
                scale = model.logit_scale.detach()

                def objective(x, model=model, text=text, scale=scale, pos=pos):
                    return per_image_contrastive(model.encode_image(x), text, scale, pos)

                adv = ATTACKS["pgd"](objective, clean,
                                     ThreatModel(eps=4 / 255, step_size=None, steps=3, norm="linf", random_start=True,
                                                 restarts=1), generator=gen).detach()
            loss = contrastive_loss(model.encode_image(adv), text, model.logit_scale, pos)
        else:
            adv = attack_batch(model, cfg, clean, text, pos, gen, objective="tecoa")
            loss, _, _ = TrainTask(model, cfg, Dist(), objective="tecoa")(clean, adv, None, text, pos)
        loss.backward()
        grads.append((adv, loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (a1, l1, g1), (a2, l2, g2) = grads
    assert torch.equal(a1, a2) and torch.equal(l1, l2) and len(g1) == len(g2) > 0
    assert all(torch.equal(x, y) for x, y in zip(g1, g2))


def test_legacy_attack_loss_trains_the_same_adapter_as_its_objective(ann, tmp_path):
    from safetensors.torch import load_file

    runs = {}
    for name, over in {"legacy": {"attack": {"loss": "trades", "beta": 2.0}},
                       "objective": {"attack": {"beta": 2.0}, "train": {"objective": "trades"}}}.items():
        cfg = load_run_config(overrides=tiny_config(ann, **{k: {**tiny_config(ann).get(k, {}), **v}
                                                             for k, v in over.items()}))
        assert cfg.train.objective == "trades"
        train(cfg, tmp_path / name)
        runs[name] = load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors"))
        assert "objective: trades" in (tmp_path / name / "config.yaml").read_text()
    assert runs["legacy"].keys() == runs["objective"].keys()
    assert all(torch.equal(runs["legacy"][k], runs["objective"][k]) for k in runs["legacy"])


def test_objective_config_errors_and_fixed_attack_fields():
    assert load_run_config().train.objective == "tecoa"
    assert load_run_config(overrides={"attack": {"loss": "adv"}}).train.objective == "tecoa"
    fast = load_run_config(overrides={"train": {"objective": "fgsm-rs"}})
    assert fast.attack.name == "fgsm" and fast.attack.threat.random_start
    for bad, match in [({"train": {"objective": "nope"}}, "unknown training objective 'nope'"),
                       ({"attack": {"loss": "l2"}}, "attack.loss 'l2': the training loss is now train.objective"),
                       ({"attack": {"loss": "adv"}, "train": {"objective": "fare"}}, "contradicts train.objective"),
                       ({"attack": {"name": "pgd"}, "train": {"objective": "fgsm-rs"}}, "attack.name = 'fgsm'")]:
        with pytest.raises(AdvloraError, match=match):
            load_run_config(overrides=bad)


def test_a_new_objective_is_one_declaration(ann, tmp_path):
    """A throw-away objective, declared here only, trains a step through ``train.objective``."""
    from advlora.training.objectives.tecoa import caption_attack

    def doubled(inputs):
        itc = inputs.itc(inputs.adv)
        return objectives.Terms(2 * itc, parts={"itc": itc})

    with objectives.registered(objectives.Objective("doubled-itc", caption_attack, doubled)):
        cfg = load_run_config(overrides=tiny_config(ann, train={"steps": 1, "objective": "doubled-itc"}))
        res = train(cfg, tmp_path / "run")
    row = _rows(tmp_path / "run" / "history.csv")[0]
    assert res.steps == 1 and res.metrics["objective"] == "doubled-itc"
    assert math.isclose(float(row["loss"]), 2 * float(row["itc"]), rel_tol=1e-6)
    with pytest.raises(AdvloraError, match="unknown training objective"):
        load_run_config(overrides={"train": {"objective": "doubled-itc"}})


def _image_folder(tmp_path, n=6):
    from PIL import Image

    folder = tmp_path / "images" / "train" / "some-class"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(4)
    for i in range(n):
        Image.fromarray((torch.rand(24, 20, 3, generator=g) * 255).to(torch.uint8).numpy()).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return tmp_path / "images"


@pytest.mark.parametrize("method", ["full", "lora", "pissa", "advlora", "dora", "vera", "ia3"])
def test_fare_trains_every_method_from_a_folder_of_images(ann, tmp_path, method):
    from advlora.data.images import read_image_folder

    images = _image_folder(tmp_path)
    ds = read_image_folder(images, "train")
    assert len(ds) == 6 and ds.captions == [] and all(p.endswith(".png") for p in ds.images)
    cfg = load_run_config(overrides=tiny_config(ann, adapter={"method": method},
                                                train={"steps": 2, "objective": "fare"},
                                                data={"name": str(images), "train_split": "train",
                                                      "eval_name": str(ann)}))
    res = train(cfg, tmp_path / "run")
    hist = _rows(tmp_path / "run" / "history.csv")
    assert res.steps == 2 and all(math.isfinite(float(r["loss"])) and r["itc"] == "" for r in hist)
    assert float(hist[0]["loss"]) > 0 and res.metrics["objective"] == "fare"
    assert "objective=fare" in res.metrics["train_attack"] and res.metrics["robust"]["r_mean"] is not None


def test_a_folder_of_images_needs_eval_data_and_an_objective_without_captions(ann, tmp_path):
    images = _image_folder(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in (images / "train" / "some-class").glob("*.png"):
        (flat / f.name).write_bytes(f.read_bytes())
    with pytest.raises(AdvloraError, match="folder of images without captions: set data.eval_name"):
        load_run_config(overrides={"data": {"name": str(flat)}})
    # a folder of class folders is the annotated imagefolder format: it may be its own evaluation set
    assert load_run_config(overrides={"data": {"name": str(images)}}).data.eval_set == str(images)
    cfg = load_run_config(overrides=tiny_config(ann, data={"name": str(flat), "eval_name": str(ann)}))
    with pytest.raises(AdvloraError, match="no captions, and objective tecoa reads them.*fare"):
        train(cfg, tmp_path / "run")


def test_cli_objective_flag_is_recorded(ann, tmp_path):
    import yaml

    from advlora.cli import main

    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tiny_config(ann, train={"steps": 1})))
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--objective", "fare", "--out",
                 str(tmp_path / "out")]) == 0
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved["train"]["objective"] == "fare" and "loss" not in saved["attack"]


def test_a_run_folder_written_with_attack_loss_resumes(ann, tmp_path):
    import yaml

    from advlora.training import setup as S

    cfg = load_run_config(overrides=tiny_config(ann, train={"steps": 2, "checkpoint_every": 1}))
    train(cfg, tmp_path / "run")
    path = tmp_path / "run" / "config.yaml"
    old = yaml.safe_load(path.read_text())           # as the trainer wrote it before train.objective existed
    del old["train"]["objective"]
    old["attack"]["loss"] = "adv"
    path.write_text(yaml.safe_dump(old))
    assert S.prepare_folder(tmp_path / "run", cfg, resume=True, main=True, argv=None).name == "step-000002"
    old["attack"]["loss"] = "trades"
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(AdvloraError, match="differs in: train.objective"):
        S.prepare_folder(tmp_path / "run", cfg, resume=True, main=True, argv=None)
