"""The run configuration of ``advlora train``: dataclasses read from YAML with dotted overrides.

A ``RunConfig`` has one section per stage: ``model``, ``data``, ``adapter`` (the fields of
``advlora.adapters.AdapterConfig``), ``attack`` (the training attack: a name and the ``ThreatModel`` fields),
``train`` (optimisation and checkpoints) and ``eval`` (validation per epoch and the final test).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlora.config import from_dict, load_yaml, merge, parse_overrides, to_dict
from advlora.errors import AdvloraError, choices_error

METHODS = ("frozen", "full", "lora", "pissa", "advlora")
#: training attacks beside the ones in ``advlora.attacks.ATTACKS``: ``none`` trains on clean images
CLEAN = "none"
LOSSES = ("adv", "trades", "mix")


@dataclass
class ModelConfig:
    name: str = "tiny-clip"
    #: a random model instead of ``name``, as ``arch:size`` (``clip:test``): tests and benchmarks
    random: str | None = None
    #: recompute each transformer layer in the backward pass, in the attack too (``advlora.models.recompute``):
    #: less memory for about one more forward pass per backward
    gradient_checkpointing: bool = False


@dataclass
class DataConfig:
    name: str = "emoji"
    format: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    #: a deterministic subset of the training images (None: all)
    train_limit: int | None = None
    #: folder the annotation's image paths are relative to (None: the annotation file's folder)
    image_root: str | None = None
    #: frames sampled per video (video sets; None: the reader's default)
    frames: int | None = None


@dataclass
class AttackConfig:
    """The training attack: ``name`` from ``advlora.attacks.ATTACKS`` or ``none`` (clean training)."""

    name: str = "pgd"
    norm: str = "linf"
    eps: str | float = "2/255"
    #: None: 2.5 * eps / steps (PGD); 1.25 * eps for FGSM with random start (fast adversarial training)
    step_size: float | None = None
    steps: int = 3
    restarts: int = 1
    random_start: bool = True
    #: adv: loss on adversarial images; trades: clean loss + beta * KL(clean || adv); mix: weighted sum
    loss: str = "adv"
    beta: float = 1.0
    clean_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise choices_error("training loss", self.loss, LOSSES)
        if self.name != CLEAN and self.steps < 1:
            raise AdvloraError(f"attack.steps must be >= 1, got {self.steps}")
        from advlora.attacks.threat import parse_eps

        parse_eps(self.eps, "attack.eps")  # a malformed eps fails here, before a run folder is written


@dataclass
class TrainConfig:
    #: optimiser steps; None: ``epochs`` passes over the training images
    steps: int | None = None
    epochs: int = 1
    batch_size: int = 32
    #: None: 1e-3 for adapters, 1e-4 for full fine-tuning
    lr: float | None = None
    #: learning rate of AdvLoRA's alpha (None: adapter.alpha_lr, else lr)
    alpha_lr: float | None = None
    weight_decay: float = 0.05
    #: warm-up steps (an int) or share of all steps (a float below 1)
    warmup: float = 0.1
    grad_clip: float | None = 1.0
    seed: int = 0
    #: save a checkpoint every N steps (0: only at the end); keep the last K
    checkpoint_every: int = 50
    keep_last: int = 2
    log_every: int = 1
    #: auto: bf16 autocast on CUDA, none on CPU; or "no" / "bf16"
    mixed_precision: str = "auto"
    #: cpu forces the CPU even when a GPU is present
    device: str | None = None
    threads: int | None = None
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise AdvloraError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise AdvloraError(f"train.steps must be >= 1, got {self.steps}")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise choices_error("train.mixed_precision", self.mixed_precision, ("auto", "no", "bf16"))


@dataclass
class EvalConfig:
    """Validation after every epoch (cheap) and the final test (PGD-10 by default)."""

    val_limit: int | None = 64
    val_steps: int = 3
    every_epochs: int = 1
    test_limit: int | None = 500
    test_steps: int = 10
    attack: str = "pgd"
    #: None: the training eps
    eps: str | float | None = None
    robust: bool = True
    rerank_k: int = -1
    batch_size: int = 64


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    #: the fields of ``advlora.adapters.AdapterConfig`` (method, rank, towers, ...)
    adapter: dict = field(default_factory=lambda: {"method": "advlora"})
    attack: AttackConfig = field(default_factory=AttackConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def method(self) -> str:
        return self.adapter.get("method", "advlora")

    def lr(self) -> float:
        if self.train.lr is not None:
            return float(self.train.lr)
        return 1e-4 if self.method == "full" else 1e-3


def adapter_config(config: RunConfig):
    """The ``AdapterConfig`` of a run (its seed defaults to the training seed)."""
    from advlora.adapters import AdapterConfig

    d = dict(config.adapter)
    if "seed" in {f.name for f in dataclasses.fields(AdapterConfig)}:
        d.setdefault("seed", config.train.seed)
    return from_dict(AdapterConfig, d, "adapter.")


def resolve(config: RunConfig) -> RunConfig:
    """Validate and fill in defaults: the adapter section becomes every ``AdapterConfig`` field."""
    method = config.adapter.get("method", "advlora")
    if method not in METHODS:
        raise choices_error("adapter method", method, METHODS)
    config.adapter = to_dict(adapter_config(config))
    return config


def load_run_config(path: str | Path | None = None, overrides: dict | list[str] | None = None,
                    base: dict | None = None) -> RunConfig:
    """A ``RunConfig`` from YAML (or defaults), then ``base``, then dotted overrides (dict or argv list)."""
    data = load_yaml(path) if path else {}
    if base:
        data = merge(data, base)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    if overrides:
        data = merge(data, overrides)
    return resolve(from_dict(RunConfig, data))


def config_diff(a: Any, b: Any, prefix: str = "", ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted names of the fields where two config dicts differ (ignoring ``ignore``)."""
    a, b = to_dict(a), to_dict(b)
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += config_diff(a.get(k), b.get(k), f"{prefix}{k}.", ignore)
        return out
    name = prefix.rstrip(".")
    return [] if a == b or name in ignore else [name]


__all__ = ["AttackConfig", "DataConfig", "EvalConfig", "METHODS", "ModelConfig", "RunConfig", "TrainConfig",
           "adapter_config", "config_diff", "load_run_config", "resolve"]
