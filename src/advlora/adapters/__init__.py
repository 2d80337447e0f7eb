"""Adapters for vision-language models: one declaration per method (frozen, full, peft's LoRA and its variants,
AdvLoRA), each a module of ``advlora.adapters.methods``.

``attach_adapter(model, "advlora", rank=8)`` adapts a ``VLModel`` in place; ``save_adapter`` writes peft's format
(plus the state an exact resume needs), ``load_adapter`` reads it back, ``merge_adapter`` folds it into the weights.
``advlora.adapters.method`` holds the declaration type and the registry (docs/contracts.md: "Adding an adapter
method"). AdvLoRA is described in docs/method.md.
"""
from __future__ import annotations

from advlora.adapters import (
                                     method,
                                     methods,  # declares every method (each module registers itself)
)
from advlora.adapters.config import (
                                     ALIGN_INITS,
                                     ALPHA_MODES,
                                     INITS,
                                     KMEANS_ON,
                                     MODES,
                                     TOWERS,
                                     AdapterConfig,
                                     make_config,
)
from advlora.adapters.io import load_adapter, merge_adapter, save_adapter
from advlora.adapters.kmeans import KMeansResult, kmeans
from advlora.adapters.method import METHODS, AdapterMethod
from advlora.adapters.methods.lora import export_lora
from advlora.adapters.model import (
                                     INFO_KEYS,
                                     AdapterState,
                                     adapter_info,
                                     alignment_errors,
                                     alpha_parameters,
                                     alpha_values,
                                     attach_adapter,
                                     lora_layers,
                                     method_of,
                                     regularization_loss,
                                     resolve_targets,
                                     state_of,
)

__all__ = ["ALIGN_INITS", "ALPHA_MODES", "AdapterConfig", "AdapterMethod", "AdapterState", "INFO_KEYS", "INITS",
           "KMEANS_ON",
           "KMeansResult", "METHODS", "MODES", "TOWERS", "adapter_info", "alignment_errors", "alpha_parameters",
           "alpha_values", "attach_adapter", "export_lora", "kmeans", "load_adapter", "lora_layers", "make_config",
           "merge_adapter", "method", "method_of", "methods", "regularization_loss", "resolve_targets", "save_adapter",
           "state_of"]
