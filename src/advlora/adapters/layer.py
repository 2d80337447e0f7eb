"""The AdvLoRA layer: peft's LoRA ``Linear`` with a trainable scalar alpha on its branch (a ``LoraVariant``).

``y = x W^T + alpha * scaling * dropout(x) A^T B^T`` (the scalar applied to the rank-r activations) with peft's
own ``lora_A`` / ``lora_B`` (so the weights keep peft's names and format) and ``scaling = 1`` for AdvLoRA. The
variant is set on each injected peft layer; peft's forward, ``merge`` and ``unmerge`` then call it.

``AdvLoraLinear`` (a subclass of peft's ``Linear``, adopted by the layers advlora and pissa inject) declares the
per-layer state in one place: ``advlora_alpha`` (a Parameter, possibly shared, or a fixed buffer), the initial
factors ``advlora_A0`` / ``advlora_B0`` and scale ``advlora_alpha0`` (the frozen base is
``W0 - alpha0 * scaling * B0 A0`` when ``advlora_residual``), and the alignment target ``advlora_w0_sq`` =
||W0||_F^2. The tensors are non-persistent buffers: they follow the module across devices and copies.
"""
from __future__ import annotations

import torch
from peft.tuners.lora.layer import Linear, LoraLayer, LoraVariant

from advlora.errors import AdvloraError

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


class AdvLoraLinear(Linear):
    """peft's LoRA ``Linear`` holding AdvLoRA's per-layer state (see the module docstring)."""

    advlora_A0: torch.Tensor
    advlora_B0: torch.Tensor
    advlora_alpha0: torch.Tensor
    #: ||W0||_F^2, the alignment regulariser's normaliser (advlora; None for pissa)
    advlora_w0_sq: torch.Tensor | None
    #: the frozen base is W0 - alpha0 * scaling * B0 A0 (residual mode, pissa)
    advlora_residual: bool
    #: AdvLoRA's scale (None for pissa, which has none)
    advlora_alpha: torch.Tensor | None

    @classmethod
    def adopt(cls, layer: LoraLayer, A0: torch.Tensor, B0: torch.Tensor, alpha0: float, *, residual: bool,
              w0_sq: float | None = None) -> AdvLoraLinear:
        """Turn an injected peft ``Linear`` into this class and set its initial factors (no alpha yet)."""
        if type(layer) is not Linear and not isinstance(layer, cls):
            raise AdvloraError(f"advlora adapts peft's LoRA Linear layers, not {type(layer).__name__}")
        layer.__class__ = cls
        dev = layer.lora_A[ADAPTER].weight.device
        layer.register_buffer("advlora_A0", A0.detach().clone().float().to(dev), persistent=False)
        layer.register_buffer("advlora_B0", B0.detach().clone().float().to(dev), persistent=False)
        layer.register_buffer("advlora_alpha0", torch.tensor(float(alpha0), device=dev), persistent=False)
        w0 = None if w0_sq is None else torch.tensor(float(w0_sq), device=dev)
        layer.register_buffer("advlora_w0_sq", w0, persistent=False)
        layer.register_buffer("advlora_alpha", None, persistent=False)
        layer.advlora_residual = residual
        return layer

    def set_factors(self, A: torch.Tensor, B: torch.Tensor) -> None:
        """Overwrite peft's lora_A / lora_B weights (keeping their Parameter objects, dtype and device)."""
        set_factors(self, A, B)

    def subtract_initial(self) -> None:
        """Residual mode: the frozen base becomes W0 - alpha0 * scaling * B0 A0 (as peft does for PiSSA)."""
        W = self.get_base_layer().weight
        with torch.no_grad():
            W.data = (W.float() - self._initial_term()).to(W.dtype)

    def _initial_term(self) -> torch.Tensor:
        """alpha0 * scaling * B0 A0: what residual mode took from W0."""
        return (self.advlora_alpha0 * self.scaling[ADAPTER]) * (self.advlora_B0 @ self.advlora_A0)

    def initial_weight(self) -> torch.Tensor:
        """W0 of the layer: the frozen base plus what residual mode subtracted (no gradient)."""
        W = self.get_base_layer().weight.detach().float()
        return W + self._initial_term() if self.advlora_residual else W

    def set_alpha(self, alpha: torch.Tensor | float, trainable: bool) -> None:
        """Install the AdvLoRA variant with ``alpha``: a (shared) Parameter when trainable, else a buffer."""
        if trainable:
            if not isinstance(alpha, torch.nn.Parameter):
                raise TypeError("a trainable alpha must be an nn.Parameter")
            self.advlora_alpha = alpha
        else:
            dev = self.lora_A[ADAPTER].weight.device
            self.register_buffer("advlora_alpha", torch.tensor(float(alpha), device=dev), persistent=False)
        self.lora_variant[ADAPTER] = AdvLoraVariant()

    def alignment_sq_error(self) -> torch.Tensor:
        """||W0 - B A||_F^2 / ||W0||_F^2, differentiable in A and B, without forming B A.

        ||W0 - BA||^2 = ||W0||^2 - 2 <W0 A^T, B> + <B^T B, A A^T>, and W0 A^T = W_base A^T (+ alpha0 s B0 A0 A^T).
        """
        A = self.lora_A[ADAPTER].weight.float()
        B = self.lora_B[ADAPTER].weight.float()
        W = self.get_base_layer().weight.detach().float()
        WAt = W @ A.t()
        if self.advlora_residual:
            WAt = WAt + (self.advlora_alpha0 * self.scaling[ADAPTER]) * (self.advlora_B0 @ (self.advlora_A0 @ A.t()))
        n0 = self.advlora_w0_sq
        err = n0 - 2 * (B * WAt).sum() + ((B.t() @ B) * (A @ A.t())).sum()
        return err.clamp_min(0) / n0.clamp_min(1e-30)


def set_factors(layer: LoraLayer, A: torch.Tensor, B: torch.Tensor) -> None:
    """Overwrite peft's lora_A / lora_B weights (keeping their Parameter objects, dtype and device)."""
    with torch.no_grad():
        layer.lora_A[ADAPTER].weight.copy_(A)
        layer.lora_B[ADAPTER].weight.copy_(B)
