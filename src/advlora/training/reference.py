"""phi_0: the image features of the model as it was before training, for objectives that declare ``reference``
(``fare``).

Two ways, chosen by what the adapter did to the base weights:
- adapters that leave the base weights as they were (``lora``, ``advlora`` in ``zero_alpha`` mode): the same
  model with its adapter layers switched off for the call (peft's ``disable_adapters`` flag of every LoRA
  layer, restored after). No extra memory; one more forward pass without gradient per step.
- otherwise (``full``, whose weights are trained in place; ``pissa`` and ``advlora`` in ``residual`` mode, whose
  frozen base holds ``W0`` minus the initial adapter): a frozen copy of the base model as loaded, before any
  adapter. Memory: one more copy of the model's weights (both towers, no gradients, no optimiser state), e.g.
  about 0.6 GB for ViT-B/32 CLIP and 1.7 GB for ViT-L/14 CLIP in float32.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from peft.tuners.lora import LoraLayer

from advlora.runtime import eval_mode


def lora_layers(model) -> list[LoraLayer]:
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def adapters_keep_base(model) -> bool:
    """The model's LoRA layers leave their base weights as loaded (switching them off gives the base model)."""
    layers = lora_layers(model)
    return bool(layers) and not any(getattr(layer, "advlora_residual", False) for layer in layers)


@contextmanager
def adapters_off(model) -> Iterator[None]:
    """Every LoRA layer of ``model`` computes its base layer alone within the block (peft's ``disable_adapters``
    flag set directly: ``enable_adapters`` would also change which parameters require gradients)."""
    layers = lora_layers(model)
    before = [layer._disable_adapters for layer in layers]
    for layer in layers:
        layer._disable_adapters = True
    try:
        yield
    finally:
        for layer, flag in zip(layers, before):
            layer._disable_adapters = flag


class OriginalModel:
    """``encode_image(images) -> (B, D)`` raw (not unit-norm) features of the model before training.

    Args:
        model: the model under training (its adapter attached).
        base: ``() -> model``: a fresh copy of the base model, called only when the adapters cannot be switched
            off (a frozen copy is kept).
        wrap: applied to the reference model (the trainer's video view, ``for_dataset``).
    """

    def __init__(self, model, base: Callable[[], Any], wrap: Callable[[Any], Any] = lambda m: m) -> None:
        self.shared = adapters_keep_base(model)
        if self.shared:
            self.model = wrap(model)
            self.kind = "the model with its adapters switched off"
        else:
            self.model = wrap(base().requires_grad_(False).eval())
            self.kind = "a frozen copy of the base model"

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        with eval_mode(self.model), (adapters_off(self.model) if self.shared else _nothing()):
            return self.model.encode_image(images, normalize=normalize)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


__all__ = ["OriginalModel", "adapters_keep_base", "adapters_off", "lora_layers"]
