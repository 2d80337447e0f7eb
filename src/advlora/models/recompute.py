"""Activation checkpointing that also covers the attack: recompute each transformer layer in the backward pass.

Hugging Face's ``gradient_checkpointing_enable`` checkpoints a layer only in training mode, but adversarial
training runs its attack (PGD-k: k forward+backward passes w.r.t. the images) in eval mode, and that backward
keeps every layer's activations just as the training step does. So the attack, not the update, set the peak
and HF's switch saved nothing there. ``enable_recompute`` checkpoints every ``GradientCheckpointingLayer``
(the encoder layers of every transformers family, adapters inside them; a ``VLModel`` names its layers with
``recompute_layers``) whenever gradients are on, in either mode: the
backward keeps only the layer boundaries and recomputes one layer at a time, for about one more forward pass.
"""
from __future__ import annotations

import types

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.modeling_layers import GradientCheckpointingLayer


def _recomputed_forward(self: nn.Module, *args, **kwargs):
    """The layer's own forward, under a non-reentrant checkpoint when a backward may follow."""
    forward = type(self).forward.__get__(self)
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    # non-reentrant: works when no input requires grad (the parameters do) and with keyword arguments;
    # the RNG state is restored for the recomputation, so dropout draws the same mask
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def enable_recompute(model: nn.Module) -> int:
    """Checkpoint every transformer layer of ``model`` in place; returns how many layers (0: none found).

    The wrapper is a bound method in the layer's ``__dict__``, so ``copy.deepcopy`` of the model binds it to
    the copy (a closure would keep running the original's layer).
    """
    if callable(getattr(model, "recompute_layers", None)):
        layers = model.recompute_layers()
    else:
        layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer.forward = types.MethodType(_recomputed_forward, layer)
    return len(layers)


def recompute_enabled(model: nn.Module) -> bool:
    """Whether ``enable_recompute`` was applied to any layer of ``model``."""
    return any(getattr(m.__dict__.get("forward"), "__func__", None) is _recomputed_forward for m in model.modules())


__all__ = ["enable_recompute", "recompute_enabled"]
