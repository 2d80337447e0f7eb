"""The AdvLoRA layer: peft's LoRA ``Linear`` with a trainable scalar alpha on its branch (a ``LoraVariant``).

``y = x W^T + alpha * scaling * dropout(x) A^T B^T`` (the scalar applied to the rank-r activations) with peft's own ``lora_A`` / ``lora_B`` (so the weights keep
peft's names and format) and ``scaling = 1`` for AdvLoRA. The variant is set on each injected peft layer; peft's
forward, ``merge`` and ``unmerge`` then call it. The layer also holds, as non-persistent buffers, what export and
the alignment regulariser need: the initial factors ``advlora_A0`` / ``advlora_B0`` and ``advlora_alpha0`` (the
frozen base is ``W0 - alpha0 * scaling * B0 A0`` in residual mode) and ``advlora_w0_sq`` = ||W0||_F^2.
"""
from __future__ import annotations

import torch
from peft.tuners.lora.layer import LoraLayer, LoraVariant

ADAPTER = "default"


class AdvLoraVariant(LoraVariant):
    """peft LoRA scaled by the layer's ``advlora_alpha`` (a Parameter, possibly shared, or a fixed buffer)."""

    @staticmethod
    def init(module: LoraLayer, adapter_name: str, **kwargs) -> None:  # factors are set by advlora, not here
        return None

    @staticmethod
    def delta(module: LoraLayer, adapter: str) -> torch.Tensor:
        return module.get_delta_weight(adapter) * module.advlora_alpha.to(module.lora_B[adapter].weight.dtype)

    @staticmethod
    def merge_safe(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        return orig_weight + AdvLoraVariant.delta(module, active_adapter).detach().to(orig_weight.dtype)

    @staticmethod
    def merge_unsafe(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> None:
        orig_weight.data += AdvLoraVariant.delta(module, active_adapter).detach().to(orig_weight.dtype)

    @staticmethod
    def unmerge(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        return orig_weight - AdvLoraVariant.delta(module, active_adapter).detach().to(orig_weight.dtype)

    @staticmethod
    def forward(module: LoraLayer, active_adapter: str, x: torch.Tensor, result: torch.Tensor,
                **kwargs) -> torch.Tensor:
        lora_A = module.lora_A[active_adapter]
        lora_B = module.lora_B[active_adapter]
        dropout = module.lora_dropout[active_adapter]
        # the scalar alpha * scaling multiplies the rank-r activations, not the (.., out) output: r/out of the
        # elementwise work of peft's own ``lora_B(..) * scaling`` (lora_B has no bias, so the product is the same)
        s = module.advlora_alpha.to(result.dtype) * module.scaling[active_adapter]
        return result + lora_B(lora_A(dropout(x)) * s)


def set_factors(layer: LoraLayer, A: torch.Tensor, B: torch.Tensor) -> None:
    """Overwrite peft's lora_A / lora_B weights (keeping their Parameter objects, dtype and device)."""
    with torch.no_grad():
        layer.lora_A[ADAPTER].weight.copy_(A)
        layer.lora_B[ADAPTER].weight.copy_(B)


def keep_initial(layer: LoraLayer, A0: torch.Tensor, B0: torch.Tensor, alpha0: float, w0_sq: float | None = None) -> None:
    """Remember the initial factors and scale (for the rank-2r export and the regulariser)."""
    dev = layer.lora_A[ADAPTER].weight.device
    layer.register_buffer("advlora_A0", A0.detach().clone().float().to(dev), persistent=False)
    layer.register_buffer("advlora_B0", B0.detach().clone().float().to(dev), persistent=False)
    layer.register_buffer("advlora_alpha0", torch.tensor(float(alpha0), device=dev), persistent=False)
    if w0_sq is not None:
        layer.register_buffer("advlora_w0_sq", torch.tensor(float(w0_sq), device=dev), persistent=False)


def subtract_initial(layer: LoraLayer) -> None:
    """Residual mode: the frozen base becomes W0 - alpha0 * scaling * B0 A0 (as peft does for PiSSA)."""
    base = layer.get_base_layer()
    s = layer.scaling[ADAPTER]
    W = base.weight
    with torch.no_grad():
        res = W.float() - (layer.advlora_alpha0 * s) * (layer.advlora_B0 @ layer.advlora_A0)
        W.data = res.to(W.dtype)


def initial_weight(layer: LoraLayer) -> torch.Tensor:
    """W0 of a layer: the frozen base plus what residual mode subtracted (no gradient)."""
    W = layer.get_base_layer().weight.detach().float()
    if getattr(layer, "advlora_residual", False):
        W = W + (layer.advlora_alpha0 * layer.scaling[ADAPTER]) * (layer.advlora_B0 @ layer.advlora_A0)
    return W


def set_alpha(layer: LoraLayer, alpha: torch.Tensor | float, trainable: bool) -> None:
    """Install the AdvLoRA variant with ``alpha``: a (shared) Parameter when trainable, else a buffer."""
    if trainable:
        if not isinstance(alpha, torch.nn.Parameter):
            raise TypeError("a trainable alpha must be an nn.Parameter")
        layer.advlora_alpha = alpha
    else:
        dev = layer.lora_A[ADAPTER].weight.device
        layer.register_buffer("advlora_alpha", torch.tensor(float(alpha), device=dev), persistent=False)
    layer.lora_variant[ADAPTER] = AdvLoraVariant()


def alignment_sq_error(layer: LoraLayer) -> torch.Tensor:
    """||W0 - B A||_F^2 / ||W0||_F^2, differentiable in A and B, without forming B A.

    ||W0 - BA||^2 = ||W0||^2 - 2 <W0 A^T, B> + <B^T B, A A^T>, and W0 A^T = W_base A^T (+ alpha0 s B0 A0 A^T).
    """
    A = layer.lora_A[ADAPTER].weight.float()
    B = layer.lora_B[ADAPTER].weight.float()
    W = layer.get_base_layer().weight.detach().float()
    WAt = W @ A.t()
    if getattr(layer, "advlora_residual", False):
        WAt = WAt + (layer.advlora_alpha0 * layer.scaling[ADAPTER]) * (layer.advlora_B0 @ (layer.advlora_A0 @ A.t()))
    n0 = layer.advlora_w0_sq
    err = n0 - 2 * (B * WAt).sum() + ((B.t() @ B) * (A @ A.t())).sum()
    return err.clamp_min(0) / n0.clamp_min(1e-30)
