"""Helpers of the training tests: a small data set with distinct captions, class folders, a tiny run config, the
model flags and command line of a prompt method's CLI training run, and an interrupted-then-resumed run."""
from __future__ import annotations

import json
from pathlib import Path

import torch

#: words the random test models' tokenizer knows (distinct captions must tokenize differently)
WORDS = ["grinning face", "flag: japan", "red apple", "dog face", "cat face", "thumbs up", "rocket",
         "house with garden", "birthday cake", "sun behind cloud", "green heart", "blue car"]


def write_data(folder: Path, n: int = 8) -> Path:
    """``n`` random 20x24 PNGs with two captions each (one shared by images i and i + n/2: multi-positive)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    recs = []
    for i in range(n):
        arr = (torch.rand(20, 24, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"img{i}.png")
        recs.append({"image": f"img{i}.png", "captions": [WORDS[i % len(WORDS)], f"{WORDS[(i + 3) % 12]} "
                                                                                  f"{WORDS[i % 12]} rocket"]})
    ann = folder / "ann.jsonl"
    ann.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return ann



def write_word_pairs(folder: Path, n: int = 6) -> Path:
    """``n`` (<= 10) random 32x32 PNGs with two captions each made of colour and object words (the attack tests'
    set: every caption its own)."""
    from PIL import Image

    words = "red blue green cat dog house tree car apple sun".split()
    g = torch.Generator().manual_seed(0)
    recs = []
    for i in range(n):
        Image.fromarray((torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()).save(folder / f"{i}.png")
        recs.append({"image": f"{i}.png", "captions": [f"{words[i]} {words[(i + 3) % 10]}", f"a {words[i]}"]})
    (folder / "ann.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return folder / "ann.jsonl"

def tiny_config(ann: Path, **sections) -> dict:
    """A run-config dict on the random CLIP test model; ``sections`` are merged into it."""
    from advlora.config import merge

    base = {"model": {"random": "clip:test"},
            "data": {"name": str(ann), "train_split": "test", "val_split": "test", "test_split": "test"},
            "adapter": {"method": "lora", "rank": 2, "towers": "vision"},
            "attack": {"steps": 2, "eps": "4/255"},
            "train": {"steps": 3, "batch_size": 4, "checkpoint_every": 0, "progress": False, "tensorboard": False,
                      "threads": 1, "lr": 1e-3},
            "eval": {"val_steps": 1, "test_steps": 2, "val_limit": 8}}
    return merge(base, sections)


#: the class names of ``write_classes``: each class's images are bright in one colour channel
CLASSES = ("red_apple", "green_leaf", "blue_sky")


def write_classes(root: Path, names=CLASSES, splits=(("train", 4), ("val", 1), ("test", 2))) -> Path:
    """Class folders ``root/<split>/<name>/<i>.png`` (``splits``: (split, images per class)) of 12x12 images, class c
    bright in channel c mod 3, and one template ("a photo of a {}.")."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in splits:
        for c, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                arr = (torch.rand(12, 12, 3, generator=g) * 80).to(torch.uint8)
                arr[..., c % 3] += 150
                Image.fromarray(arr.numpy()).save(folder / f"{i}.png")
    (root / "templates.txt").write_text("a photo of a {}.\n")
    return root


def model_flags(model: str, folder: Path) -> list[str]:
    """The model flags of a CLI run: ``tiny-clip`` the random tiny CLIP; another family (``siglip``) its random test
    model saved to ``folder`` (its tokenizer must be the same in every process: ``save_test_model``)."""
    if model == "tiny-clip":
        return ["--random-model", "clip:tiny"]
    return ["--model", str(save_test_model(folder, model))]


def cli_train(flags: list[str], method: str, objective: str, data: Path, out: Path, *extra: str) -> dict:
    """``advlora train`` of ``method`` for 2 steps of 16 shots on the class folder ``data`` with a 1-step attack and
    a clean test of 6 images (``extra``: further flags; a repeated flag overrides); its ``metrics.json``."""
    from advlora.cli import main

    assert main(["train", *flags, "--method", method, "--objective", objective, "--data", str(data),
                 "--shots", "16", "--steps", "2", "--batch-size", "6", "--attack-steps", "1", "--device", "cpu",
                 "--progress", "off", "--out", str(out), "--eval.val_limit", "3", "--eval.test_limit", "6",
                 "--eval.test_steps", "1", "--eval.robust", "false", "--train.tensorboard", "false",
                 "--train.warmup", "0", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def prompt_run_config(model: dict, adapter: dict, data: Path, objective: str = "tecoa", val_limit: int = 3):
    """The ``RunConfig`` of a 3-step few-shot (2 shots) run of ``adapter`` on ``model`` (a config section) that
    checkpoints every step, for ``cut_and_resume``."""
    from advlora.training import load_run_config

    return load_run_config(overrides={
        "model": model, "adapter": adapter, "data": {"name": str(data), "shots": 2},
        "train": {"steps": 3, "batch_size": 3, "device": "cpu", "progress": "off", "tensorboard": False,
                  "objective": objective, "lr": 0.05, "warmup": 0, "checkpoint_every": 1},
        "attack": {"steps": 1}, "eval": {"val_limit": val_limit, "test_limit": val_limit, "test_steps": 1,
                                         "robust": False}})


def cut_and_resume(config, tmp_path: Path):
    """A run of ``config()`` to its end in ``tmp_path/ref``, and one interrupted after step 2 in ``tmp_path/cut`` then
    resumed from its checkpoint: (the reference's result, the resumed run's folder)."""
    import pytest

    from advlora.training import train

    ref = train(config(), tmp_path / "ref")

    def cut(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(), tmp_path / "cut", on_step=cut)
    train(config(), tmp_path / "cut", resume=True)
    return ref, tmp_path / "cut"


def save_test_model(folder: Path, arch: str = "clip") -> Path:
    """The random test model saved as a model folder: other processes must load it rather than rebuild it,
    because the random model's WordPiece tokenizer is not reproducible across processes (token ids differ)."""
    from advlora.models import save_model
    from advlora.models.tiny import random_model

    save_model(random_model(arch, "test", seed=0), folder)
    return folder


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str, script: list[str] | None = None, nproc: int = 2) -> list[str]:
    """The command line of ``torchrun`` with ``nproc`` local processes on a free port running ``advlora ARGS``
    (or ``script`` followed by ARGS)."""
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *(script or ["-m", "advlora"]), *args]


def nudge(m):
    """Move every trainable tensor a little, as training would."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
