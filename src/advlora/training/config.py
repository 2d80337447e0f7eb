"""The run configuration of ``advlora train``: dataclasses read from YAML with dotted overrides.

A ``RunConfig`` has one section per stage: ``model``, ``data``, ``adapter`` (the fields of
``advlora.adapters.AdapterConfig``), ``attack`` (the training attack: a name, its ``ThreatModel`` and the
objectives' weights), ``train`` (the objective, optimisation and checkpoints) and ``eval`` (validation per
epoch and the final test).

``train.objective`` names a training objective of ``advlora.training.objectives``. Configs written before it
existed name the loss as ``attack.loss`` (``adv``, ``trades``, ``mix``): read as the objective it is
(``tecoa``, ``trades``, ``mix``).

The attack section reads the threat model's fields flat (``attack.eps``, ``attack.steps``) or nested
(``attack.threat.eps``); the resolved ``config.yaml`` writes them flat, as before the section held a
``ThreatModel``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlora.adapters import METHODS, AdapterConfig
from advlora.adapters import method as adapter_methods
from advlora.attacks.objectives import check_loss
from advlora.attacks.threat import ThreatModel, format_eps, parse_eps
from advlora.config import from_dict, load_yaml, merge, parse_overrides, to_dict
from advlora.data.images import is_caption_free_folder
from advlora.data.shards import MODES as SHARD_MODES
from advlora.data.shards import is_shard_spec
from advlora.errors import AdvloraError, choices_error
from advlora.progress import PROGRESS
from advlora.training import objectives
from advlora.training.data import LoaderConfig

#: training attacks beside the ones in ``advlora.attacks.ATTACKS``: ``none`` trains on clean images
CLEAN = "none"


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
    #: how training pixels are read: in memory or streamed through DataLoader workers, and augmentation
    #: (``data.loader.storage``, ``.workers``, ``.augment``, ``.prefetch``; ``advlora.training.data.LoaderConfig``)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    #: the data set validation and the final test read (None: ``name``); needed when ``name`` is a shard
    #: pattern, since shards hold one training split
    eval_name: str | None = None
    #: reading shards (``name`` a ``.tar`` pattern): ``exact`` epochs (every sample once per epoch) or
    #: ``resampled`` (shards drawn with replacement: for sets too large for whole epochs)
    shard_mode: str = "exact"
    #: train on a balanced k-shot sample of a classification set (``advlora.data.fewshot``): ``shots`` images of
    #: every class, drawn by ``shot_seed`` (the same images for every method); None: every training image
    shots: int | None = None
    shot_seed: int = 1

    def __post_init__(self) -> None:
        if self.shots is not None and (isinstance(self.shots, bool) or int(self.shots) != self.shots
                                       or self.shots < 1):
            raise AdvloraError(f"data.shots (--shots) must be an integer >= 1, got {self.shots!r}")
        if self.shots is not None and self.train_limit is not None:
            raise AdvloraError("data.shots and data.train_limit both subsample the training images: set one")
        if self.shard_mode not in SHARD_MODES:
            raise choices_error("data.shard_mode", self.shard_mode, SHARD_MODES)
        if is_shard_spec(self.name) and self.eval_name is None:
            raise AdvloraError(f"data.name {self.name} names training shards: set data.eval_name (--eval-data) to "
                               f"the data set validation and the final test read, e.g. the annotation file the "
                               f"shards were written from")
        # a folder of class folders (the imagefolder format) is annotated: validation and the test can read it
        if self.eval_name is None and is_caption_free_folder(self.name):
            raise AdvloraError(f"data.name {self.name} is a folder of images without captions: set data.eval_name "
                               f"(--eval-data) to the annotated data set validation and the final test read")

    @property
    def eval_set(self) -> str:
        """The data set of validation and the final test."""
        return self.eval_name or self.name

    @property
    def sharded(self) -> bool:
        return is_shard_spec(self.name)


#: where the training budget departs from ``ThreatModel``'s defaults: PGD-3 at linf 2/255 (random start, step
#: 2.5 * eps / steps); a section that sets some threat fields gets these for the others
TRAINING_THREAT = {"eps": "2/255", "steps": 3}


def _training_threat() -> ThreatModel:
    return ThreatModel(**TRAINING_THREAT)


#: the ``ThreatModel`` fields the attack section also reads flat (``attack.eps`` is ``attack.threat.eps``)
THREAT_FIELDS = tuple(f.name for f in dataclasses.fields(ThreatModel))


@dataclass
class AttackConfig:
    """The training attack: ``name`` from ``advlora.attacks.ATTACKS`` or ``none`` (clean training), its budget
    ``threat`` (step_size None: 2.5 * eps / steps for PGD, 1.25 * eps for FGSM with random start, i.e. fast
    adversarial training), and the weights the objectives read. What the attack maximises and what the update
    minimises is ``train.objective``; ``attack_loss`` chooses the loss the attack of an objective that declares
    it (``tecoa``, ``mix``, ``fgsm-rs``) maximises. ``threat.norm`` (``--norm``) is the ball, linf or l2."""

    name: str = "pgd"
    threat: ThreatModel = field(default_factory=_training_threat)
    #: the loss the training attack maximises (``advlora.attacks.objectives.LOSSES``): contrastive
    #: (cross-entropy), margin (the CW margin) or dlr
    attack_loss: str = "contrastive"
    #: the weight of the KL term of objectives ``trades`` and ``fap`` (FAP's LAMBDA_1)
    beta: float = 1.0
    #: the weight of the clean loss of objective ``mix``
    clean_weight: float = 0.5

    def __post_init__(self) -> None:
        check_loss(self.attack_loss, "attack.attack_loss")

    @staticmethod
    def nest(section: dict) -> dict:
        """An attack section with flat threat fields (``{"eps": "4/255"}``) as ``{"threat": {"eps": ...}}``;
        a flat field wins over a nested one (it comes from a later override)."""
        section = dict(section)
        flat = {k: section.pop(k) for k in THREAT_FIELDS if k in section}
        threat = section.get("threat")
        if flat or isinstance(threat, dict):
            section["threat"] = {**TRAINING_THREAT, **(threat if isinstance(threat, dict) else {}), **flat}
        if isinstance(section.get("threat"), dict) and "eps" in section["threat"]:
            parse_eps(section["threat"]["eps"], "attack.eps")  # the error names the key the user wrote
        return section

    def config_dict(self) -> dict:
        """The section as YAML writes it: the threat's fields flat, radii as fractions when exact (``2/255``);
        ``attack_loss`` only when it is not the default (the configs, and fingerprints, of runs that never chose
        one stay as they were)."""
        norm = self.threat.norm
        threat = {k: _radius_text(v, norm) if k in ("eps", "step_size") else v
                  for k, v in to_dict(self.threat).items()}
        loss = {} if self.attack_loss == "contrastive" else {"attack_loss": self.attack_loss}
        return {"name": self.name, **threat, **loss, "beta": self.beta, "clean_weight": self.clean_weight}

    def eval_threat(self, eps: str | float | None, steps: int, seed: int) -> ThreatModel:
        """The threat model of validation and the final test: this norm, ``eps`` (None: the training eps),
        ``steps`` steps of the default size, one restart, random start."""
        return ThreatModel(norm=self.threat.norm, eps=self.threat.eps if eps is None else eps, steps=steps,
                           random_start=True, seed=seed)


def _radius_text(value: float | None, norm: str = "linf") -> str | float | None:
    """``2/255`` for a radius that text reads back exactly, else the float itself."""
    if value is None:
        return None
    text = format_eps(float(value), norm)
    return text if parse_eps(text) == float(value) else float(value)


@dataclass
class TrainConfig:
    #: the training objective (``advlora.training.objectives``): tecoa, fare, trades, mix, fgsm-rs, fap,
    #: pmg-aft
    objective: str = objectives.DEFAULT
    #: optimiser steps; None: ``epochs`` passes over the training images
    steps: int | None = None
    epochs: int = 1
    batch_size: int = 32
    #: None: 1e-3 for adapters, 1e-4 for full fine-tuning
    lr: float | None = None
    #: learning rate of AdvLoRA's alpha parameter group (None: lr)
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
    #: progress of the steps (``advlora.progress.PROGRESS`` modes): auto (a bar on a terminal, else a log line
    #: every 30 s), bar, log or off; true / false read as auto / off
    progress: str = "auto"
    tensorboard: bool = True

    def __post_init__(self) -> None:
        objectives.get(self.objective)
        if isinstance(self.progress, bool):
            self.progress = "auto" if self.progress else "off"
        if self.progress not in PROGRESS:
            raise choices_error("train.progress", self.progress, PROGRESS)
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
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def method(self) -> str:
        return self.adapter.method

    def lr(self) -> float:
        if self.train.lr is not None:
            return float(self.train.lr)
        return adapter_methods.get(self.method).default_lr


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
    return from_dict(RunConfig, resolve_dict(data))


def resolve_dict(data: dict) -> dict:
    """A run-config dict as ``from_dict`` takes it: the legacy ``attack.loss`` read as ``train.objective``, the
    attack fields the objective fixes set, the attack's threat fields nested, and the adapter's seed defaulting
    to the training seed (so one ``train.seed`` varies both)."""
    data = resolve_objective(dict(data))
    if isinstance(data.get("attack"), dict):
        data["attack"] = AttackConfig.nest(data["attack"])
    adapter = data.get("adapter", {})
    if isinstance(adapter, dict) and "seed" not in adapter:
        seed = (data.get("train") or {}).get("seed")
        if seed is not None:
            data["adapter"] = {**adapter, "seed": seed}
    return data


def resolve_objective(data: dict) -> dict:
    """``train.objective`` from the legacy ``attack.loss`` (a config naming both must agree), and the ``attack``
    fields the objective fixes (``fgsm-rs``: the attack's name), refusing a config that sets them otherwise."""
    attack, train = data.get("attack") or {}, data.get("train") or {}
    if not isinstance(attack, dict) or not isinstance(train, dict):
        return data                                     # from_dict names the malformed section
    attack, train = dict(attack), dict(train)
    if "loss" in attack:
        loss = attack.pop("loss")
        if loss not in objectives.LEGACY_LOSSES:
            raise AdvloraError(f"attack.loss {loss!r}: the training loss is now train.objective (--objective: "
                               f"{', '.join(objectives.names())}); attack.loss reads only the former values "
                               f"{', '.join(objectives.LEGACY_LOSSES)}")
        named = objectives.LEGACY_LOSSES[loss]
        if train.get("objective", named) != named:
            raise AdvloraError(f"attack.loss {loss!r} (objective {named}) contradicts train.objective "
                               f"{train['objective']!r}: set train.objective only")
        train["objective"] = named
    objective = objectives.get(train.get("objective", objectives.DEFAULT))
    for key, value in objective.attack.items():
        if key in attack and attack[key] != value:
            raise AdvloraError(f"objective {objective.name} trains with attack.{key} = {value!r}; "
                               f"the config sets {attack[key]!r}")
        attack[key] = value
    if attack.get("attack_loss", "contrastive") != "contrastive" and not objective.attack_loss:
        raise AdvloraError(f"objective {objective.name} chooses its own attack loss; attack.attack_loss "
                           f"{attack['attack_loss']!r} applies to the objectives that declare it "
                           f"({', '.join(n for n in objectives.names() if objectives.get(n).attack_loss)})")
    out = {**data, "train": train}
    if attack or "attack" in data:
        out["attack"] = attack
    return out


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
           "config_diff", "load_run_config", "resolve_dict"]
