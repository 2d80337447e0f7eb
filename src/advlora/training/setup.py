"""Everything a run needs before its first step: the run folder, the model with its adapter, the data, the
optimiser with its schedule, and the Accelerator. Loaded base models and data sets are cached in memory, so
that several short trainings in one process (demo, grid, ablation) load each only once.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from advlora.adapters import alpha_parameters, attach_adapter
from advlora.adapters import method as adapter_methods
from advlora.config import dump_yaml, load_yaml
from advlora.data import load_dataset
from advlora.data.images import is_caption_free_folder, read_image_folder
from advlora.errors import AdvloraError
from advlora.io import atomic_write_text, write_json
from advlora.models import load_model
from advlora.models.recompute import enable_recompute
from advlora.models.tiny import random_model
from advlora.runs import created_by, is_empty, manifest, mark
from advlora.training.checkpoint import list_checkpoints
from advlora.training.config import RunConfig, config_diff, load_run_config

_BASE_MODELS: dict[tuple, Any] = {}
_DATASETS: dict[tuple, Any] = {}
#: fields that may differ between a run and its resume (they do not change the result)
RESUMABLE_CHANGES = ("train.progress", "train.tensorboard", "train.threads", "train.log_every", "train.device",
                     "train.checkpoint_every",
                     "train.keep_last", "eval.val_limit", "eval.test_limit", "eval.every_epochs", "eval.robust",
                     "eval.val_steps", "eval.test_steps", "eval.batch_size", "eval.rerank_k")


def make_accelerator(cfg):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    mp = cfg.mixed_precision
    mp = ("bf16" if cuda else "no") if mp == "auto" else mp
    return Accelerator(cpu=not cuda, mixed_precision=mp if cuda else "no")


def prepare_folder(out: Path, config: RunConfig, resume: bool, main: bool, argv: list[str] | None,
                   execution_info: dict | None = None) -> Path | None:
    """Create or check the run folder; returns the checkpoint to resume from (None: start from scratch).
    ``execution_info``: how the run runs, for the manifest (``advlora.runs.execution``)."""
    ckpt_dir = out / "checkpoints"
    ours = is_empty(out) or (out / "config.yaml").is_file()    # a fresh folder or a training run's
    if resume and not (out / "config.yaml").is_file():
        if not ours:
            raise AdvloraError(f"--resume: {out} holds no training run (config.yaml is missing); choose another --out")
        resume = False      # a fresh folder: the run starts at step 0 (a job script runs one line every time)
    if resume:
        diff = config_diff(saved_config(out / "config.yaml"), dump_and_load(config), ignore=RESUMABLE_CHANGES)
        if diff:
            raise AdvloraError(f"--resume: {out} was trained with another config (differs in: {', '.join(diff)})")
    elif out.exists() and (list_checkpoints(ckpt_dir) or (out / "metrics.json").exists()):
        raise AdvloraError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    if main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AdvloraError(f"cannot create run folder {out}: {e.strerror or e}") from None
        if not resume:
            for stale in ("history.csv", "epochs.csv", "tb"):
                p = out / stale
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if ours and created_by(out) is None:
            mark(out, "train")
        atomic_write_text(out / "config.yaml", dump_yaml(config))
        write_json(out / "manifest.json", manifest(config.train.seed, argv, execution_info))
    found = list_checkpoints(ckpt_dir) if resume and main else []
    return found[-1] if found else None


def dump_and_load(config: RunConfig) -> dict:
    return yaml.safe_load(dump_yaml(config))


def saved_config(path: Path) -> dict:
    """A run folder's config.yaml as this version writes it (an older one's ``attack.loss`` read as
    ``train.objective``); the file as it is when it no longer builds."""
    try:
        return dump_and_load(load_run_config(path))
    except AdvloraError:
        return load_yaml(path)


def base_model(cfg, device) -> Any:
    """A fresh copy of the run's base model (loaded once per process, then copied)."""
    key = (cfg.name, cfg.random)
    if key not in _BASE_MODELS:
        if cfg.random:
            arch, _, size = cfg.random.partition(":")
            _BASE_MODELS[key] = random_model(arch, size or "test", seed=0).requires_grad_(False)
        else:
            _BASE_MODELS[key] = load_model(cfg.name, device="cpu")
    return copy_model(_BASE_MODELS[key]).to(device)


def copy_model(model):
    """A deep copy of a ``VLModel`` that shares its (read-only) tokenizer."""
    return copy.deepcopy(model, memo={id(model.tokenizer): model.tokenizer})


def fresh_base(config: RunConfig, device, base=None):
    """A fresh copy of the run's base model on ``device`` (of ``base`` when given), no adapter."""
    return copy_model(base).to(device) if base is not None else base_model(config.model, device)


def build_model(config: RunConfig, device, base=None):
    """The base model (``base`` copied when given) on ``device`` with the run's adapter attached."""
    model = fresh_base(config, device, base)
    if adapter_methods.get(config.method).trains:
        attach_adapter(model, config.adapter)
    if config.model.gradient_checkpointing:
        # advlora's own: transformers' switch checkpoints only in training mode, not in the (eval-mode) attack
        if enable_recompute(model) == 0:
            raise AdvloraError("model.gradient_checkpointing: this model has no transformers encoder layers "
                               "(GradientCheckpointingLayer) to recompute")
    return model


def dataset(data_cfg, split: str, limit: int | None, seed: int = 0, name: str | None = None):
    """The ``split`` of the run's data set (``DataConfig``; ``name``: another set read with its flags, e.g.
    ``data.eval_set``), loaded once per process. A folder is read as images without captions
    (``advlora.data.images``), unless it is a folder of class folders: that is the annotated ``imagefolder``
    format (``advlora.data.classification``), whose texts are its class names."""
    d = data_cfg
    name = name or d.name
    key = (name, split, limit, d.format, d.image_root, d.frames, seed)
    if key not in _DATASETS:
        if is_caption_free_folder(name):
            _DATASETS[key] = read_image_folder(name, split).limit(limit, seed)
        else:
            _DATASETS[key] = load_dataset(name, split, fmt=d.format, limit=limit, seed=seed,
                                          image_root=d.image_root, frames=d.frames)
    return _DATASETS[key]


def trainable_towers(model) -> set[str]:
    """The towers ("vision", "text", "other") holding a trainable parameter (of ``hf_model``, or a prompt module
    the wrapper holds: ``VLModel.tower_of``)."""
    towers = set()
    for name, p in model.named_parameters():
        if p.requires_grad:
            name = name[len("hf_model."):] if name.startswith("hf_model.") else name
            towers.add(model.tower_of(strip_prefix(name)) or "other")
    return towers


def strip_prefix(name: str) -> str:
    for prefix in ("base_model.model.", "model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def optimizer_and_schedule(model, config: RunConfig, total_steps: int):
    """AdamW with alpha in its own group (own lr, no weight decay), cosine schedule with linear warm-up."""
    from transformers import get_cosine_schedule_with_warmup

    alpha = [p for p in alpha_parameters(model) if p.requires_grad]
    ids = {id(p) for p in alpha}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    lr = config.lr()
    alpha_lr = config.train.alpha_lr or lr
    groups = [{"params": others, "lr": lr, "weight_decay": config.train.weight_decay, "name": "weights"}]
    if alpha:
        groups.append({"params": alpha, "lr": float(alpha_lr), "weight_decay": 0.0, "name": "alpha"})
    opt = torch.optim.AdamW(groups, lr=lr)
    w = config.train.warmup
    warmup = int(round(w * total_steps)) if w < 1 else int(w)
    return opt, get_cosine_schedule_with_warmup(opt, warmup, total_steps)


def param_counts(model) -> dict[str, Any]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "share": 100.0 * trainable / max(1, total)}


__all__ = ["base_model", "build_model", "copy_model", "dataset", "fresh_base", "make_accelerator",
           "optimizer_and_schedule", "param_counts", "prepare_folder", "trainable_towers"]
