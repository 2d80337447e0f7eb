"""``dora``: peft's DoRA, LoRA with a trainable magnitude per output row (weight-decomposed low-rank adaptation).

peft's ``LoraConfig(use_dora=True)``: the layer computes ``m * (W + s B A) / ||W + s B A||`` (the norm per
output row, detached), with m set to ``||W||`` at creation, so the output starts unchanged (B = 0). A, B and m
train. Its folder is peft's own (``lora_A``, ``lora_B``, ``lora_magnitude_vector``), which ``PeftModel`` loads;
that is also all an exact resume needs. peft's DoRA adapts Linear layers, not ``nn.MultiheadAttention``.

AdvLoRA's parts are options of this method, through AdvLoRA's own functions (``methods.advlora.adopt_layers``):
``init=cluster`` (or any initialisation of ``advlora.adapters.init`` other than peft's) starts A, B from that
initialisation of W0 with the residual base W0 - alpha0 s B0 A0, and ``trainable_alpha`` scales the branch by
AdvLoRA's trainable alpha (per ``alpha_mode``, its own optimiser group). Either way the layer becomes an
``AdvLoraLinear`` computing ``m * (W' + alpha s B A) / ||W' + alpha s B A||`` (``ScaledDoraVariant``), m starts at
the row norms of W0 (so the output starts unchanged), and the folder stays peft's: a DoRA LoRA relative to W0 with
alpha folded into B (rank 2r in residual mode, as AdvLoRA exports), beside ``advlora_state.safetensors`` (A, B,
A0, B0, alpha, m) for an exact resume.
"""
from __future__ import annotations

from pathlib import Path

import torch
from peft.tuners.lora.variants import DoraLinearVariant
from torch import nn

from advlora.adapters import init as initialisations
from advlora.adapters import layer as L
from advlora.adapters.io import PEFT_PREFIX, PeftTuner, read_tensors
from advlora.adapters.method import register
from advlora.adapters.methods.advlora import adopt_layers, alpha_log, load_factors, trainable_alphas
from advlora.adapters.methods.lora import (
    STATE_FILE,
    lora_shapes,
    peft_config,
    read_saved,
    residual_state,
    write_export,
)
from advlora.adapters.model import inject, lora_layers
from advlora.errors import AdvloraError


class ScaledDoraVariant(DoraLinearVariant):
    """peft's DoRA on an ``AdvLoraLinear``: the branch's scale is ``advlora_alpha * scaling`` (alpha a Parameter,
    possibly shared, or a fixed buffer), in the forward, the weight norm and the merge alike."""

    @staticmethod
    def scale(module, adapter: str) -> torch.Tensor:
        return module.advlora_alpha.to(module.lora_B[adapter].weight.dtype) * module.scaling[adapter]

    @staticmethod
    def forward(module, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs) -> torch.Tensor:
        dropout = module.lora_dropout[active_adapter]
        if isinstance(dropout, nn.Identity) or not module.training:
            base_result = result
        else:
            x, base_result = dropout(x), None
        return result + module.lora_magnitude_vector[active_adapter](
            x, lora_A=module.lora_A[active_adapter], lora_B=module.lora_B[active_adapter],
            scaling=ScaledDoraVariant.scale(module, active_adapter), base_layer=module.get_base_layer(),
            base_result=base_result, adapter_name=active_adapter)

    @staticmethod
    def _delta(module, adapter: str) -> torch.Tensor:
        w = module.lora_B[adapter].weight @ module.lora_A[adapter].weight
        return (w * ScaledDoraVariant.scale(module, adapter)).detach()

    @staticmethod
    def merge_safe(module, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        w = orig_weight + ScaledDoraVariant._delta(module, active_adapter).to(orig_weight.dtype)
        norm = torch.linalg.norm(w, dim=1)
        module._cache_store(f"{active_adapter}-weight_norm", norm)
        m = module.lora_magnitude_vector[active_adapter].weight.detach()
        return ((m / norm).view(-1, 1) * w).to(orig_weight.dtype)

    @staticmethod
    def merge_unsafe(module, active_adapter: str, orig_weight: torch.Tensor) -> None:
        orig_weight.data = ScaledDoraVariant.merge_safe(module, active_adapter, orig_weight.data)

    @staticmethod
    def unmerge(module, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        factor = module.lora_magnitude_vector[active_adapter].weight.detach() / module._cache_pop(
            f"{active_adapter}-weight_norm")
        return (orig_weight / factor.view(-1, 1)
                - ScaledDoraVariant._delta(module, active_adapter).to(orig_weight.dtype))


class Dora(PeftTuner):
    name = "dora"
    summary = ("peft's DoRA: LoRA plus a trainable magnitude per output (weight-decomposed); rsLoRA scaling; "
               "AdvLoRA's init=cluster and trainable_alpha as options")
    family = "low-rank"
    reads = ("rank", "towers", "targets", "init", "seed", "lora_alpha", "dropout", "use_rslora", "trainable_alpha",
             "alpha_mode", "alpha_init", "align_init", "kmeans_iters", "kmeans_on")
    default_init = "peft"   # the initialisation peft's own layers draw (``Initialisation.peft_own``)
    peft_type = "LORA"
    cost_note = "the norm of W + s B A per output row, recomputed at every forward (weight-decomposed)"

    @property
    def inits(self) -> tuple[str, ...]:  # type: ignore[override] - AdvLoRA's, read live, after peft's own
        return tuple(sorted(initialisations.names(), key=lambda n: not initialisations.get(n).peft_own))

    @staticmethod
    def adopts(cfg) -> bool:
        """Whether AdvLoRA's parts are on (its initialisation or its trainable alpha): the layers are then
        ``AdvLoraLinear`` with ``ScaledDoraVariant``; else they are peft's DoRA layers as peft makes them."""
        return not initialisations.get(cfg.init).peft_own or cfg.trainable_alpha

    def validate(self, cfg) -> None:
        if cfg.trainable_alpha and cfg.alpha_mode == "fixed":
            raise AdvloraError("adapter trainable_alpha with alpha_mode=fixed: choose layer, tower or shared")

    def attach(self, model, cfg, state, names, saved=None) -> None:
        lora_alpha = cfg.lora_alpha if cfg.lora_alpha is not None else cfg.rank
        init = initialisations.get(cfg.init)
        inject(model, peft_config(cfg, names, lora_alpha=lora_alpha, init=init.peft_own,
                                  use_rslora=cfg.use_rslora, use_dora=True), names, cfg.seed)
        if not self.adopts(cfg):
            return
        factors = None
        if saved is None and not init.peft_own:
            factors = init([model.hf_model.get_submodule(n).weight for n in names], cfg)
        adopt_layers(model, cfg, state, names, saved, factors, residual=not init.peft_own,
                     trainable=cfg.trainable_alpha)
        with torch.no_grad():
            for n in names:
                lay = model.hf_model.get_submodule(n)
                lay.lora_variant[L.ADAPTER] = ScaledDoraVariant()
                # m = ||W0|| per row: W' + alpha0 s B0 A0 = W0 at the start, so the output starts unchanged
                mag = lay.lora_magnitude_vector[L.ADAPTER].weight
                mag.copy_(torch.linalg.norm(lay.initial_weight(), dim=1).to(mag.dtype))

    # ---- training -----------------------------------------------------------------------------------------
    def param_groups(self, model) -> dict[str, list[nn.Parameter]]:
        return {"alpha": trainable_alphas(model)}

    def logged(self, model) -> dict[str, float]:
        return alpha_log(model)

    # ---- files --------------------------------------------------------------------------------------------
    def save(self, model, state, folder: Path, meta: dict) -> None:
        if not self.adopts(state.config):
            return super().save(model, state, folder, meta)
        from safetensors.torch import save_file

        mags = {n: lay.lora_magnitude_vector[L.ADAPTER].weight.detach().float().cpu().contiguous().clone()
                for n, lay in lora_layers(model).items()}
        write_export(model, state, folder, {f"{PEFT_PREFIX}{n}.lora_magnitude_vector": m for n, m in mags.items()},
                     use_dora=True)
        save_file({**residual_state(model), **{f"{n}.magnitude": m for n, m in mags.items()}},
                  str(folder / STATE_FILE))

    def load(self, model, state, folder: Path, meta: dict) -> None:
        if not self.adopts(state.config):
            return super().load(model, state, folder, meta)
        load_factors(model, read_saved(folder, state.layers, state.config.rank))
        st = read_tensors(folder / STATE_FILE)
        with torch.no_grad():
            for n, lay in lora_layers(model).items():
                mag = lay.lora_magnitude_vector[L.ADAPTER].weight
                m = st.get(f"{n}.magnitude")
                if m is None or m.shape != mag.shape:
                    raise AdvloraError(f"{folder / STATE_FILE}: the magnitude of layer {n} is missing or misshapen")
                mag.copy_(m)

    def from_peft(self, pc, tensors, folder):
        if not pc.use_dora or pc.rank_pattern or pc.alpha_pattern:
            return None
        return {"rank": int(pc.r), "lora_alpha": float(pc.lora_alpha), "dropout": float(pc.lora_dropout),
                "use_rslora": bool(pc.use_rslora)}, lora_shapes(tensors, folder)

    def info(self, cfg) -> dict:
        out = {"init": cfg.init, **({"rslora": True} if cfg.use_rslora else {})}
        if cfg.trainable_alpha:
            out["alpha_mode"] = cfg.alpha_mode
        return out


register(Dora())
