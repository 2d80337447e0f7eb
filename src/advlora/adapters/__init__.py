"""Adapters for vision-language models: AdvLoRA beside peft's LoRA and PiSSA, full fine-tuning and frozen.

``attach_adapter(model, "advlora", rank=8)`` adapts a ``VLModel`` in place; ``save_adapter`` writes peft's format
(plus AdvLoRA's state), ``load_adapter`` reads it back, ``merge_adapter`` folds it into the weights.
The method is described in docs/method.md.
"""
from __future__ import annotations

from advlora.adapters.config import (ALIGN_INITS, ALPHA_MODES, INITS, KMEANS_ON, METHODS, MODES, TOWERS,
                                     AdapterConfig, make_config)
from advlora.adapters.io import export_lora, load_adapter, merge_adapter, save_adapter
from advlora.adapters.kmeans import KMeansResult, kmeans
from advlora.adapters.model import (AdapterState, adapter_info, alignment_errors, alpha_parameters, alpha_values,
                                    attach_adapter, lora_layers, regularization_loss, resolve_targets, state_of)

__all__ = ["ALIGN_INITS", "ALPHA_MODES", "AdapterConfig", "AdapterState", "INITS", "KMEANS_ON", "KMeansResult",
           "METHODS", "MODES", "TOWERS", "adapter_info", "alignment_errors", "alpha_parameters", "alpha_values",
           "attach_adapter", "export_lora", "kmeans", "load_adapter", "lora_layers", "make_config", "merge_adapter",
           "regularization_loss", "resolve_targets", "save_adapter", "state_of"]
