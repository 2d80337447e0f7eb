"""Helpers of the training tests: a small data set with distinct captions and a tiny run config."""
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
