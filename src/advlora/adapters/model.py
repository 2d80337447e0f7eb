"""Attaching adapters to a ``VLModel``: target resolution per tower, method dispatch, and what they report.

``lora`` and ``pissa`` are peft's own LoRA (``inject_adapter_in_model`` on ``model.hf_model``, so module names
stay those of ``hf_model``). ``advlora`` injects the same peft LoRA layers, overwrites A, B (and the base weight
in residual mode) with its own initialisation and installs ``AdvLoraVariant`` for the trainable alpha. ``full``
unfreezes the chosen towers; ``frozen`` trains nothing. The record of what was attached lives in
``model.advlora_adapter`` (an ``AdapterState``: config, adapted layer names and shapes, the init report).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advlora.adapters import layer as L
from advlora.adapters.config import AdapterConfig, make_config
from advlora.adapters.init import INITIALISATIONS, Factors
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


def _towers(cfg: AdapterConfig) -> tuple[str, ...]:
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
    towers = _towers(cfg)
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


def _check_rank(model, names: list[str], rank: int) -> dict[str, list[int]]:
    shapes = {}
    for n in names:
        out_f, in_f = model.hf_model.get_submodule(n).weight.shape
        if rank > min(out_f, in_f):
            raise AdvloraError(f"adapter rank {rank} is larger than layer {n} allows ({out_f} x {in_f}: at most "
                               f"{min(out_f, in_f)})")
        shapes[n] = [int(out_f), int(in_f)]
    return shapes


def attach_adapter(model, method_or_config: str | AdapterConfig | dict, rank: int | None = None, **options: Any):
    """Adapt ``model`` (a ``VLModel``) in place and return it; only the adapter's parameters require grad.

    ``method_or_config``: a method name (frozen | full | lora | pissa | advlora), a dict or an ``AdapterConfig``;
    ``rank`` and ``options`` (any ``AdapterConfig`` field) override it. ``rank=None`` keeps the config's (8).
    """
    cfg = make_config(method_or_config, rank, **options)
    return build(model, cfg)


def build(model, cfg: AdapterConfig, saved: dict[str, dict[str, torch.Tensor]] | None = None,
          names: list[str] | None = None):
    """Attach ``cfg`` (to ``names`` when given, else to the resolved targets); with ``saved`` (per layer A0, B0
    from a saved adapter) the initial factors are read, not recomputed."""
    old = state_of(model)
    if old is not None and not old.merged and old.config.method != "frozen":
        raise AdvloraError(f"the model already has a {old.config.method} adapter: attach to a freshly loaded model")
    model.hf_model.requires_grad_(False)
    state = AdapterState(cfg)
    if cfg.method == "full":
        towers = _towers(cfg)
        for n, p in model.hf_model.named_parameters():
            if cfg.towers == "both" or model.tower_of(n) in towers:
                p.requires_grad_(True)
    elif cfg.method in ("lora", "pissa", "advlora"):
        names = list(names) if names is not None else resolve_targets(model, cfg)
        state.layers = _check_rank(model, names, cfg.rank)
        _inject(model, cfg, names, initialise=saved is None)
        if cfg.method == "pissa":
            state.report = _pissa(model, cfg, names, saved)
        elif cfg.method == "advlora":
            state.report = _advlora(model, cfg, names, saved)
    model.advlora_adapter = state
    return model


def _inject(model, cfg: AdapterConfig, names: list[str], initialise: bool = True) -> None:
    """peft's LoRA layers on ``names``; peft initialises them (lora, pissa) unless advlora sets the factors."""
    from peft import LoraConfig, inject_adapter_in_model

    if cfg.method == "advlora":
        lora_alpha, init = cfg.rank, False  # scaling 1: alpha is the scale; factors set below
    else:
        lora_alpha = cfg.scaling * cfg.rank
        init = ("pissa" if cfg.method == "pissa" else True) if initialise else False
    pc = LoraConfig(r=cfg.rank, lora_alpha=lora_alpha, target_modules=list(names), lora_dropout=cfg.dropout,
                    init_lora_weights=init, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # peft's kaiming init of A uses the global RNG
        inject_adapter_in_model(pc, model.hf_model)
    for n in names:
        if not isinstance(model.hf_model.get_submodule(n), L.LoraLayer):
            raise AdvloraError(f"peft did not adapt layer {n}")


def lora_layers(model) -> dict[str, L.LoraLayer]:
    """The adapted layers by name (relative to ``hf_model``)."""
    state = state_of(model)
    if state is None or state.merged:
        return {}
    return {n: model.hf_model.get_submodule(n) for n in state.layers}


def _pissa(model, cfg, names, saved) -> list[dict]:
    report = []
    for n in names:
        lay = model.hf_model.get_submodule(n)
        if saved is None:  # peft has initialised A, B and subtracted s B A from the base
            A0, B0 = lay.lora_A[L.ADAPTER].weight, lay.lora_B[L.ADAPTER].weight
            L.AdvLoraLinear.adopt(lay, A0, B0, 1.0, residual=True)
        else:
            lay = L.AdvLoraLinear.adopt(lay, saved[n]["A0"], saved[n]["B0"], 1.0, residual=True)
            lay.set_factors(lay.advlora_A0, lay.advlora_B0)
            lay.subtract_initial()
        report.append({"layer": n})
    return report


def _factors(model, cfg: AdapterConfig, names: list[str]) -> list[Factors]:
    return INITIALISATIONS[cfg.init]([model.hf_model.get_submodule(n).weight for n in names], cfg)


def _advlora(model, cfg: AdapterConfig, names: list[str], saved) -> list[dict]:
    factors = _factors(model, cfg, names) if saved is None else None
    alphas: dict[str, nn.Parameter] = {}
    report = []
    for i, n in enumerate(names):
        lay = model.hf_model.get_submodule(n)
        if factors is not None:
            A0, B0 = factors[i].A, factors[i].B
            report.append({"layer": n, "shape": list(lay.get_base_layer().weight.shape), "error": factors[i].error,
                           "onehot_error": factors[i].onehot_error})
        else:
            A0, B0 = saved[n]["A0"], saved[n]["B0"]
            report.append({"layer": n})
        w0_sq = float(lay.get_base_layer().weight.detach().float().pow(2).sum())
        lay = L.AdvLoraLinear.adopt(lay, A0, B0, cfg.alpha0, residual=cfg.mode == "residual", w0_sq=w0_sq)
        lay.set_factors(A0, B0)
        if lay.advlora_residual:
            lay.subtract_initial()
        if cfg.alpha_mode == "fixed":
            lay.set_alpha(cfg.alpha0, trainable=False)
        else:
            key = {"layer": n, "tower": model.tower_of(n) or "other", "shared": "all"}[cfg.alpha_mode]
            if key not in alphas:
                dev = lay.lora_A[L.ADAPTER].weight.device
                alphas[key] = nn.Parameter(torch.tensor(cfg.alpha0, dtype=torch.float32, device=dev))
            lay.set_alpha(alphas[key], trainable=True)
    return report


# ---- what attached adapters report ---------------------------------------------------------------
def adapter_info(model) -> dict:
    """Method, trainable and total parameter counts, share of trainable parameters (in %), adapted layers."""
    state = state_of(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    info = {"method": state.method if state else "frozen", "trainable": trainable, "total": total,
            "share": 100.0 * trainable / max(total, 1), "layers": len(state.layers) if state else 0}
    if state is not None:
        info.update(rank=state.config.rank, towers=state.config.towers)
        if state.config.method == "advlora":
            info.update(init=state.config.init, mode=state.config.mode, alpha_mode=state.config.alpha_mode)
    return info


def alpha_parameters(model) -> list[nn.Parameter]:
    """AdvLoRA's trainable alphas (each shared one once), for their own optimiser parameter group."""
    seen: dict[int, nn.Parameter] = {}
    for lay in lora_layers(model).values():
        a = lay.advlora_alpha if isinstance(lay, L.AdvLoraLinear) else None
        if isinstance(a, nn.Parameter) and a.requires_grad:
            seen.setdefault(id(a), a)
    return list(seen.values())


def alpha_values(model) -> dict[str, float]:
    """alpha of every adapted layer (shared alphas repeat), for logging; empty for other methods."""
    return {n: float(lay.advlora_alpha.detach()) for n, lay in lora_layers(model).items()
            if isinstance(lay, L.AdvLoraLinear) and lay.advlora_alpha is not None}


def regularization_loss(model) -> torch.Tensor:
    """``align_lambda * sum_layers ||W0 - B A||_F^2 / ||W0||_F^2`` (AdvLoRA); a zero tensor when off."""
    state = state_of(model)
    dev = model.device if hasattr(model, "device") else torch.device("cpu")
    if state is None or state.merged or state.config.method != "advlora" or not state.config.align_lambda:
        return torch.zeros((), device=dev)
    total = sum(lay.alignment_sq_error() for lay in lora_layers(model).values())
    return float(state.config.align_lambda) * total


def alignment_errors(model) -> dict[str, float]:
    """Current relative alignment error ||W0 - B A||_F / ||W0||_F of each AdvLoRA layer."""
    state = state_of(model)
    if state is None or state.config.method != "advlora":
        return {}
    with torch.no_grad():
        return {n: float(lay.alignment_sq_error().sqrt()) for n, lay in lora_layers(model).items()}
