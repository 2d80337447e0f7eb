"""What an experiment is: methods trained under one shared budget, evaluated under attacks at eps values.

An experiment (``advlora grid``, ``advlora demo``, ``advlora ablate``) is a ``GridConfig``: the shared
training budget (``train``: a nested dict of ``RunConfig`` fields every run gets), the methods (each a label,
an adapter method, a training objective and its own overrides of that dict: a row is method x objective), the
evaluation (attacks, eps values, subset sizes), the data sets and the seeds. It expands into *train cells* (method x
data set x seed) and *eval cells* (train cell x evaluated set x eps, all attacks in one); each cell is a run folder,
complete once its marker is written (last, atomically). A train cell's models are evaluated on their own set unless
``eval_on`` names others (the protocols' base and new classes, ``emoji-cls:base`` / ``emoji-cls:new``, and
cross-dataset transfer: ``advlora.experiments.protocols``). A k-shot budget (``data.shots``) draws its sample with the
cell's seed unless it sets ``data.shot_seed``: seeds 1, 2, 3 are three samples, the same for every method.
"""
from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlora.adapters import METHODS
from advlora.attacks import parse_eps as _parse_eps
from advlora.attacks import registry
from advlora.config import from_dict, load_yaml, merge, parse_overrides
from advlora.errors import AdvloraError
from advlora.training import objectives

#: RunConfig overrides that make a run train on clean images (``clean_training: true`` of a method)
CLEAN_TRAINING: dict = {"attack": {"name": "none"}}


@dataclass
class MethodSpec:
    """One compared method: ``label`` names it in tables; ``objective`` is its training objective
    (``advlora.training.objectives``; None: the budget's, by default ``tecoa``); ``config`` overrides the shared
    budget for it."""

    label: str
    method: str = "advlora"
    adapter: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    clean_training: bool = False
    objective: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise AdvloraError(f"method {self.label!r}: unknown adapter method {self.method!r} "
                               f"(valid: {', '.join(METHODS)})")
        if self.objective is not None:
            objectives.get(self.objective)


@dataclass
class EvalSpec:
    """The robust evaluation: attacks at every eps, on a deterministic subset of the split.

    ``attacks`` are names of the attack registry (``advlora.attacks.registry``: any registered attack, e.g.
    ``apgd-margin``, ``text``, ``joint``); ``square_limit`` and ``square_queries`` serve the black-box attacks.
    """

    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd", "square"])
    eps: list[str] = field(default_factory=lambda: ["2/255"])
    norm: str = "linf"
    steps: int = 10
    limit: int | None = 300
    square_limit: int | None = 64
    square_queries: int = 100
    split: str = "test"
    #: BLIP: re-rank the top k of ITC by ITM (-1: LAVIS's depth for the set's size, ``default_rerank_k``: 128, or
    #: 256 from 5,000 images on, at most the set's size; 0: ITC only)
    rerank_k: int = -1
    #: the white-box attacks' objective (``advlora.attacks.objectives``); BLIP: "rerank" attacks through the
    #: ITM re-ranking of the top k, not only ITC
    objective: str = "contrastive"
    #: eps values at which only ``sweep_attack`` runs (the robust-vs-eps sweep); empty: none beyond ``eps``
    sweep_eps: list[str] = field(default_factory=list)
    #: the attack of the robust-vs-eps sweep (an image attack of the registry): it alone runs at ``sweep_eps``, and
    #: its robust r_mean over every eps evaluated is the summary's monotonicity check and the report's plot
    sweep_attack: str = "pgd"
    #: run the robust evaluation's sanity checks at the ``eps`` values (on ``sanity_limit`` images: they rerun
    #: PGD with doubled steps, doubled restarts and at eps 0.5)
    sanity: bool = True
    sanity_limit: int = 32
    batch_size: int = 64
    #: a suite's early exit (``standard``): the rank at which an image is done (None: the largest reported k;
    #: 1: at its first misclassification, as AutoAttack stops, when the table reports top-1 alone)
    exit_k: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "square_queries", "sanity_limit", "batch_size", "limit", "square_limit", "exit_k"):
            v = getattr(self, name)
            if v is None and name in ("limit", "square_limit", "exit_k"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AdvloraError(f"eval.{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.attacks, str):
            self.attacks = [a.strip() for a in self.attacks.split(",") if a.strip()]
        registry.check_names(self.attacks)
        if not registry.get(self.sweep_attack).perturbs_images:
            raise AdvloraError(f"eval.sweep_attack {self.sweep_attack!r} does not perturb images; the robust-vs-eps "
                               f"sweep needs an image attack such as {registry.names('white-box')[0]}")
        self.eps = [str(e) for e in self.eps]
        self.sweep_eps = [str(e) for e in self.sweep_eps]
        for e in [*self.eps, *self.sweep_eps]:
            parse_eps(e)


@dataclass
class GridConfig:
    name: str = "grid"
    model: str = "tiny-clip"
    datasets: list[str] = field(default_factory=lambda: ["emoji"])
    seeds: list[int] = field(default_factory=lambda: [0])
    train: dict = field(default_factory=dict)
    methods: list[MethodSpec] = field(default_factory=list)
    eval: EvalSpec = field(default_factory=EvalSpec)
    #: use a random model of this architecture and size instead of ``model`` ("clip:test"): tests and CI
    random_model: str | None = None
    #: training set -> the sets its models are evaluated on (a set not named here: itself); no set may be
    #: evaluated from two training sets (the results are kept per evaluated set)
    eval_on: dict[str, list[str]] = field(default_factory=dict)
    #: the protocol the experiment follows, recorded in every eval cell's metrics.json and in summary.json
    #: (``advlora.evaluation.protocols.record``'s shape: name, settings, overrides; empty: "custom")
    protocol: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.methods = [m if isinstance(m, MethodSpec) else from_dict(MethodSpec, m, "methods.") for m in self.methods]
        if not self.methods:
            raise AdvloraError("a grid needs at least one method under 'methods'")
        labels = [m.label for m in self.methods]
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise AdvloraError(f"method label {sorted(dup)[0]!r} is used twice")
        self.seeds = [int(s) for s in self.seeds]
        self.eval_on = {str(k): [v] if isinstance(v, str) else [str(x) for x in v] for k, v in self.eval_on.items()}
        unknown = sorted(set(self.eval_on) - set(self.datasets))
        if unknown:
            raise AdvloraError(f"eval_on names {unknown[0]!r}, which is not among the training sets "
                               f"(datasets: {', '.join(self.datasets)})")
        seen: dict[str, str] = {}
        for train in self.datasets:
            sets = evaluated_on(self, train)
            if not sets:
                raise AdvloraError(f"eval_on: {train!r} is evaluated on no set")
            for d in sets:
                if seen.setdefault(d, train) != train:
                    raise AdvloraError(f"eval_on: {d!r} is evaluated from both {seen[d]!r} and {train!r}; run "
                                       f"them as two experiments")


def evaluated_on(cfg: GridConfig, train: str) -> list[str]:
    """The sets the models trained on ``train`` are evaluated on, in order (distinct)."""
    return list(dict.fromkeys(cfg.eval_on.get(train, [train])))


def result_sets(cfg: GridConfig) -> list[str]:
    """Every evaluated set, in the order of the training sets, then of ``eval_on``: the summary's data sets."""
    return [d for train in cfg.datasets for d in evaluated_on(cfg, train)]


@dataclass(frozen=True)
class TrainCell:
    method: MethodSpec
    dataset: str
    seed: int

    @property
    def key(self) -> str:
        return f"{slug(self.dataset)}/{slug(self.method.label)}/seed{self.seed}"


@dataclass(frozen=True)
class EvalCell:
    """One ``evaluate_robust`` call: the trained model of ``train`` under ``attacks`` at ``eps`` on ``dataset``
    ("": the set it was trained on)."""

    train: TrainCell
    attacks: tuple[str, ...]
    eps: str
    sanity: bool = False
    dataset: str = ""

    @property
    def data(self) -> str:
        """The evaluated set."""
        return self.dataset or self.train.dataset

    @property
    def key(self) -> str:
        if self.data == self.train.dataset:
            return f"{self.train.key}/eval-{slug(self.eps)}"
        return f"{self.train.key}/eval-{slug(self.data)}-{slug(self.eps)}"


def slug(text: str) -> str:
    """A folder-safe name: ``adv. LoRA`` -> ``adv-lora``, ``2/255`` -> ``2-255``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def parse_eps(eps: str | float) -> float:
    """``"4/255"`` or ``0.0157`` -> a float in [0, 1] pixel units (``advlora.attacks.parse_eps``, at most 1)."""
    value = _parse_eps(eps)
    if value > 1:
        raise AdvloraError(f"eps {eps!r} is outside [0, 1] (pixel space)")
    return value


def load_grid_config(path: str | Path | None, overrides: list[str] | None = None, *,
                     base: dict | None = None) -> GridConfig:
    """A ``GridConfig`` from YAML (or ``base``) with dotted command-line overrides (``--eval.limit 100``)."""
    data = copy.deepcopy(base or {})
    if path is not None:
        data = merge(data, load_yaml(path))
    if overrides:
        data = merge(data, parse_overrides(overrides, top_level=True))
    return from_dict(GridConfig, data)


def train_cells(cfg: GridConfig) -> list[TrainCell]:
    return [TrainCell(m, d, s) for d, m, s in itertools.product(cfg.datasets, cfg.methods, cfg.seeds)]


def eval_cells(cfg: GridConfig, cell: TrainCell) -> list[EvalCell]:
    """On each set ``cell`` is evaluated on: every attack at each eps of ``eval.eps`` (with the sanity checks),
    then ``eval.sweep_attack`` alone at the sweep eps."""
    out = []
    for d in evaluated_on(cfg, cell.dataset):
        d = "" if d == cell.dataset else d
        out += [EvalCell(cell, tuple(cfg.eval.attacks), e, cfg.eval.sanity, d) for e in cfg.eval.eps]
        seen = {parse_eps(e) for e in cfg.eval.eps}
        for e in cfg.eval.sweep_eps:
            if parse_eps(e) not in seen:
                out.append(EvalCell(cell, (cfg.eval.sweep_attack,), e, False, d))
                seen.add(parse_eps(e))
    return out


def run_config_dict(cfg: GridConfig, cell: TrainCell) -> dict[str, Any]:
    """The nested dict of ``RunConfig`` fields of one training run: shared budget, then the method's overrides."""
    d = copy.deepcopy(cfg.train)
    d = merge(d, {"model": {"name": cfg.model, "random": cfg.random_model}, "data": {"name": cell.dataset}})
    d = merge(d, {"adapter": {"method": cell.method.method, **cell.method.adapter}})
    if cell.method.objective is not None:
        d = merge(d, {"train": {"objective": cell.method.objective}})
    if cell.method.clean_training:
        d = merge(d, CLEAN_TRAINING)
    d = merge(d, cell.method.config)
    if d.get("data", {}).get("shots") is not None and "shot_seed" not in d["data"]:
        d = merge(d, {"data": {"shot_seed": cell.seed}})   # the k-shot sample of this seed, for every method
    d = merge(d, {"train": {"seed": cell.seed}})
    return d
