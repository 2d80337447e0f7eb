"""``advlora``: AdvLoRA, peft's LoRA layers with AdvLoRA's initialisation, residual base and trainable alpha.

It injects peft's LoRA layers (scaling 1), overwrites A, B (and the base weight in residual mode) with its own
initialisation (``advlora.adapters.init``: cluster by default) and installs ``AdvLoraVariant`` for the
trainable alpha (docs/method.md). Its alphas train in their own optimiser group (``train.alpha_lr``, no weight
decay); ``align_lambda`` adds the alignment regulariser. Its folder exports a plain peft LoRA relative to W0
(``lora.export_lora``) plus ``advlora_state.safetensors`` for an exact resume. Its parts are functions here
(``adopt_layers``, ``trainable_alphas``, ``alpha_log``, ``load_factors``) that other methods offer as options
(DoRA's ``init=cluster`` and ``trainable_alpha``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from advlora.adapters import init as initialisations
from advlora.adapters import layer as L
from advlora.adapters.io import merge_peft_layers
from advlora.adapters.method import AdapterMethod, register
from advlora.adapters.methods.lora import STATE_FILE, peft_config, read_saved, residual_state, write_export
from advlora.adapters.model import inject, lora_layers
from advlora.errors import AdvloraError


class AdvLora(AdapterMethod):
    name = "advlora"
    summary = "AdvLoRA: k-means + alignment initialisation, residual base, trainable alpha"
    family = "low-rank"
    reads = ("rank", "towers", "targets", "init", "mode", "alpha_mode", "alpha_init", "align_lambda", "align_init",
             "kmeans_iters", "kmeans_on", "seed", "dropout")
    default_init = "cluster"
    peft_type = None  # its peft folder is a plain LoRA: a foreign one loads as lora

    @property
    def inits(self) -> tuple[str, ...]:  # type: ignore[override] - read live: an initialisation declared later counts
        return initialisations.names()

    def validate(self, cfg) -> None:
        if cfg.mode != "zero_alpha":
            return
        if cfg.alpha_init not in (None, 0, 0.0):
            raise AdvloraError(f"adapter alpha_init must be 0 in zero_alpha mode, got {cfg.alpha_init!r}")
        if cfg.alpha_mode == "fixed":
            raise AdvloraError("adapter alpha_mode=fixed with mode=zero_alpha keeps alpha at 0: the adapter "
                               "would never act (use mode=residual)")
        if initialisations.get(cfg.init).zero_update:
            raise AdvloraError(f"adapter init={cfg.init} with mode=zero_alpha starts with B = 0 and alpha = 0: no "
                               "gradient reaches any parameter (use mode=residual)")

    def attach(self, model, cfg, state, names, saved: Path | None = None) -> None:
        # scaling 1: alpha is the scale; the factors are set below
        inject(model, peft_config(cfg, names, lora_alpha=cfg.rank, init=False), names, cfg.seed)
        factors = None
        if saved is None:
            factors = initialisations.get(cfg.init)([model.hf_model.get_submodule(n).weight for n in names], cfg)
        adopt_layers(model, cfg, state, names, saved, factors, residual=cfg.mode == "residual",
                     trainable=cfg.alpha_mode != "fixed")

    # ---- training -----------------------------------------------------------------------------------------
    def param_groups(self, model) -> dict[str, list[nn.Parameter]]:
        return {"alpha": trainable_alphas(model)}

    def regularizer(self, model, cfg) -> torch.Tensor | None:
        if not cfg.align_lambda:
            return None
        return float(cfg.align_lambda) * sum(lay.alignment_sq_error() for lay in lora_layers(model).values())

    def logged(self, model) -> dict[str, float]:
        return alpha_log(model)

    def diagnostics(self, model) -> dict[str, float]:
        with torch.no_grad():
            return {n: float(lay.alignment_sq_error().sqrt()) for n, lay in lora_layers(model).items()}

    # ---- files --------------------------------------------------------------------------------------------
    def save(self, model, state, folder: Path, meta: dict) -> None:
        from safetensors.torch import save_file

        write_export(model, state, folder)
        save_file(residual_state(model), str(folder / STATE_FILE))

    def load(self, model, state, folder: Path, meta: dict) -> None:
        load_factors(model, read_saved(folder, state.layers, state.config.rank))

    def merge(self, model, state) -> None:
        merge_peft_layers(model, state.layers)

    def info(self, cfg) -> dict:
        return {"init": cfg.init, "mode": cfg.mode, "alpha_mode": cfg.alpha_mode}


# ---- AdvLoRA's parts, shared with the methods that offer them as options (DoRA's init=cluster, trainable_alpha) ----
def adopt_layers(model, cfg, state, names: list[str], saved: Path | None, factors: list | None, *, residual: bool,
                 trainable: bool) -> None:
    """AdvLoRA's parts on the peft LoRA layers ``names`` just injected (plain or DoRA): each becomes an
    ``AdvLoraLinear`` holding its initial factors A0, B0 (``factors``, an initialisation's ``Factors``; the saved
    ones when loading ``saved``; None: the factors peft initialised), with the frozen base W0 - alpha0 s B0 A0 when
    ``residual``, and alpha: one trainable Parameter per ``cfg.alpha_mode`` key when ``trainable``, else fixed at
    ``cfg.alpha0``. Fills ``state.report`` (the initialisation's errors per layer)."""
    if saved is not None:
        initial = {n: (s["A0"], s["B0"]) for n, s in read_saved(saved, state.layers, cfg.rank).items()}
    elif factors is not None:
        initial = {n: (f.A, f.B) for n, f in zip(names, factors)}
    else:
        initial = {n: (lay.lora_A[L.ADAPTER].weight, lay.lora_B[L.ADAPTER].weight)
                   for n in names for lay in [model.hf_model.get_submodule(n)]}
    alphas: dict[str, nn.Parameter] = {}
    for i, n in enumerate(names):
        lay = model.hf_model.get_submodule(n)
        if factors is not None and saved is None:
            state.report.append({"layer": n, "shape": list(lay.get_base_layer().weight.shape),
                                 "error": factors[i].error, "onehot_error": factors[i].onehot_error})
        else:
            state.report.append({"layer": n})
        A0, B0 = initial[n]
        w0_sq = float(lay.get_base_layer().weight.detach().float().pow(2).sum())
        lay = L.AdvLoraLinear.adopt(lay, A0, B0, cfg.alpha0, residual=residual, w0_sq=w0_sq)
        lay.set_factors(lay.advlora_A0, lay.advlora_B0)
        if lay.advlora_residual:
            lay.subtract_initial()
        if not trainable:
            lay.set_alpha(cfg.alpha0, trainable=False)
            continue
        key = {"layer": n, "tower": model.tower_of(n) or "other", "shared": "all"}[cfg.alpha_mode]
        if key not in alphas:
            dev = lay.lora_A[L.ADAPTER].weight.device
            alphas[key] = nn.Parameter(torch.tensor(cfg.alpha0, dtype=torch.float32, device=dev))
        lay.set_alpha(alphas[key], trainable=True)


def trainable_alphas(model) -> list[nn.Parameter]:
    """The trainable alphas of the model's adopted layers, each shared one once (the ``alpha`` optimiser group)."""
    seen: dict[int, nn.Parameter] = {}
    for lay in lora_layers(model).values():
        a = getattr(lay, "advlora_alpha", None)
        if isinstance(a, nn.Parameter) and a.requires_grad:
            seen.setdefault(id(a), a)
    return list(seen.values())


def alpha_log(model) -> dict[str, float]:
    """Each adopted layer's alpha (shared ones repeat), by layer name."""
    return {n: float(lay.advlora_alpha.detach()) for n, lay in lora_layers(model).items()
            if getattr(lay, "advlora_alpha", None) is not None}


def load_factors(model, saved: dict[str, dict[str, torch.Tensor]]) -> None:
    """The saved A, B (and trainable alpha) of ``read_saved`` into the adopted layers."""
    with torch.no_grad():
        for n, lay in lora_layers(model).items():
            lay.set_factors(saved[n]["A"], saved[n]["B"])
            if isinstance(lay.advlora_alpha, nn.Parameter) and "alpha" in saved[n]:
                lay.advlora_alpha.fill_(float(saved[n]["alpha"]))


register(AdvLora())
