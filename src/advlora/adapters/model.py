"""Attaching adapters to a ``VLModel``: target resolution per tower, the method's declaration, what they report.

``attach_adapter`` resolves the target layers and hands them to the method's declaration
(``advlora.adapters.method``; each method is one module of ``advlora.adapters.methods``). The peft-based methods
inject peft's layers with ``inject`` (``inject_adapter_in_model`` on ``model.hf_model``, so module names stay
those of ``hf_model``). The record of what was attached lives in ``model.advlora_adapter`` (an
``AdapterState``: config, adapted layer names and shapes, the init report).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advlora.adapters import method as methods
from advlora.adapters.config import AdapterConfig, make_config
from advlora.errors import AdvloraError, choices_error

TOWER_NAMES = ("vision", "text")


@dataclass
class AdapterState:
    """What ``attach_adapter`` did: kept on the model as ``model.advlora_adapter``."""

    config: AdapterConfig
    layers: dict[str, list[int]] = field(default_factory=dict)  # adapted module -> [out, in]
    report: list[dict] = field(default_factory=list)  # per layer: init errors
    merged: bool = False

    @property
    def method(self) -> str:
        return f"{self.config.method} (merged)" if self.merged else self.config.method


def state_of(model) -> AdapterState | None:
    return getattr(model, "advlora_adapter", None)


def towers_of(cfg: AdapterConfig) -> tuple[str, ...]:
    return TOWER_NAMES if cfg.towers == "both" else (cfg.towers,)


def _matches(pattern: str, name: str) -> bool:
    if name == pattern or name.endswith("." + pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def _tower_patterns(model, cfg: AdapterConfig, tower: str) -> list[str]:
    """The target patterns of one tower: the backend's defaults, the dict entry, or the list ("tower:" prefixes)."""
    if cfg.targets is None:
        return list(model.default_targets.get(tower, []))
    if isinstance(cfg.targets, dict):
        return list(cfg.targets.get(tower, []))
    out = []
    for p in cfg.targets:
        head, sep, rest = p.partition(":")
        if sep and head in TOWER_NAMES:
            if head == tower:
                out.append(rest)
        else:
            out.append(p)
    return out


def resolve_targets(model, cfg: AdapterConfig) -> list[str]:
    """Full names (relative to ``hf_model``) of the ``nn.Linear`` modules to adapt, in module order."""
    towers = towers_of(cfg)
    linear = [(n, model.tower_of(n)) for n, m in model.hf_model.named_modules() if isinstance(m, nn.Linear)]
    per_tower = {t: _tower_patterns(model, cfg, t) for t in towers}
    names = []
    for pattern in sorted({p for ps in per_tower.values() for p in ps}):
        hits = [n for n, t in linear if t in towers and pattern in per_tower.get(t, []) and _matches(pattern, n)]
        if not hits:
            valid = sorted({n.rsplit(".", 1)[-1] for n, t in linear if t in towers})
            raise choices_error(f"adapter target (in the {'/'.join(towers)} tower)", pattern, valid)
        names += hits
    order = {n: i for i, (n, _) in enumerate(linear)}
    return sorted(set(names), key=order.__getitem__)


def layer_shapes(model, names: list[str]) -> dict[str, list[int]]:
    """[out, in] of each named layer's weight."""
    return {n: [int(d) for d in model.hf_model.get_submodule(n).weight.shape] for n in names}


def check_rank(shapes: dict[str, list[int]], rank: int) -> None:
    """A rank no layer can hold is one error line (for the methods that read ``rank``)."""
    for n, (out_f, in_f) in shapes.items():
        if rank > min(out_f, in_f):
            raise AdvloraError(f"adapter rank {rank} is larger than layer {n} allows ({out_f} x {in_f}: at most "
                               f"{min(out_f, in_f)})")


def attach_adapter(model, method_or_config: str | AdapterConfig | dict, rank: int | None = None, **options: Any):
    """Adapt ``model`` (a ``VLModel``) in place and return it; only the adapter's parameters require grad.

    ``method_or_config``: a method name (``advlora list methods``), a dict or an ``AdapterConfig``;
    ``rank`` and ``options`` (any ``AdapterConfig`` field) override it. ``rank=None`` keeps the config's (8).
    """
    cfg = make_config(method_or_config, rank, **options)
    return build(model, cfg)


def build(model, cfg: AdapterConfig, names: list[str] | None = None, saved=None):
    """Attach ``cfg`` (to ``names`` when given, else to the resolved targets) by its method's declaration;
    ``saved``: the adapter folder being loaded (the method skips what loading overwrites)."""
    old = state_of(model)
    if old is not None and not old.merged and methods.get(old.config.method).trains:
        raise AdvloraError(f"the model already has a {old.config.method} adapter: attach to a freshly loaded model")
    method = methods.get(cfg.method)
    state = AdapterState(cfg)
    if method.targets:
        names = list(names) if names is not None else resolve_targets(model, cfg)
        method.check(model, names)
        state.layers = layer_shapes(model, names)
        if "rank" in method.reads:
            check_rank(state.layers, cfg.rank)
    model.hf_model.requires_grad_(False)
    method.attach(model, cfg, state, list(state.layers), saved)
    model.advlora_adapter = state
    return model


def inject(model, peft_config, names: list[str], seed: int) -> None:
    """peft's layers of ``peft_config`` on ``names`` (relative to ``hf_model``), peft's random init seeded.

    peft's tuner is built on ``hf_model`` in place (as ``inject_adapter_in_model`` does, which refuses the tuners
    with state shared across layers, such as VeRA's projections: the layers hold it here)."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.tuners.tuners_utils import BaseTunerLayer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # peft's random inits use the global RNG
        PEFT_TYPE_TO_TUNER_MAPPING[peft_config.peft_type](model.hf_model, peft_config, adapter_name="default")
    for n in names:
        if not isinstance(model.hf_model.get_submodule(n), BaseTunerLayer):
            raise AdvloraError(f"peft did not adapt layer {n}")


def lora_layers(model) -> dict[str, nn.Module]:
    """The adapted layers by name (relative to ``hf_model``)."""
    state = state_of(model)
    if state is None or state.merged:
        return {}
    return {n: model.hf_model.get_submodule(n) for n in state.layers}


def method_of(model) -> methods.AdapterMethod | None:
    """The declaration of the model's attached (unmerged) adapter method, or None."""
    state = state_of(model)
    return None if state is None or state.merged else methods.get(state.config.method)


# ---- what attached adapters report ---------------------------------------------------------------
#: the keys of ``adapter_info`` every adapter has; the rest are config fields its method reads
INFO_KEYS = ("method", "trainable", "total", "share", "layers")
#: config fields ``adapter_info`` reports for every method that reads them (``AdapterMethod.reads``)
SHARED_FIELDS = ("rank", "towers")


def adapter_info(model) -> dict:
    """Method, trainable and total parameter counts, share of trainable parameters (in %), adapted layers (the
    ``INFO_KEYS``), then the config fields that tell its runs apart: rank and towers where the method reads them
    (a prompt has no rank, IA3 no rank, full fine-tuning no rank) and what its declaration adds
    (``AdapterMethod.info``)."""
    state = state_of(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    info = {"method": state.method if state else "frozen", "trainable": trainable, "total": total,
            "share": 100.0 * trainable / max(total, 1), "layers": len(state.layers) if state else 0}
    if state is not None:
        method = methods.get(state.config.method)
        info.update({k: getattr(state.config, k) for k in SHARED_FIELDS if k in method.reads})
        info.update(method.info(state.config))
    return info


def alpha_parameters(model) -> list[nn.Parameter]:
    """The method's ``alpha`` optimiser group (AdvLoRA's trainable alphas, each shared one once)."""
    m = method_of(model)
    return [] if m is None else list(m.param_groups(model).get("alpha", []))


def alpha_values(model) -> dict[str, float]:
    """The per-layer values the method logs (AdvLoRA's alphas; shared ones repeat); empty for other methods."""
    m = method_of(model)
    return {} if m is None else m.logged(model)


def regularization_loss(model) -> torch.Tensor:
    """The method's training regulariser (AdvLoRA: ``align_lambda * sum ||W0 - B A||_F^2 / ||W0||_F^2``); a zero
    tensor when it has none."""
    m = method_of(model)
    reg = None if m is None else m.regularizer(model, state_of(model).config)
    if reg is None:
        return torch.zeros((), device=model.device if hasattr(model, "device") else torch.device("cpu"))
    return reg


def alignment_errors(model) -> dict[str, float]:
    """The method's per-layer diagnostics (AdvLoRA: the relative alignment error ||W0 - B A||_F / ||W0||_F)."""
    state = state_of(model)
    return {} if state is None else methods.get(state.config.method).diagnostics(model)
