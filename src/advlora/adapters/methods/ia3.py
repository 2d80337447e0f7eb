"""``ia3``: peft's (IA)^3, one trainable vector per adapted layer that rescales its output.

peft's ``IA3Config``: ``y = l * (W x)`` with l (out) initialised to ones, so the output starts unchanged; only l
trains (no rank). Every target is treated as an attention-style layer (``feedforward_modules`` empty: the
vector scales the output, never the input). The folder is peft's own, which ``PeftModel`` loads; the vectors
are all an exact resume needs. peft's IA3 adapts Linear layers, not ``nn.MultiheadAttention``. An IA3 folder
without advlora.json (its layers' input sizes unknown) does not load in advlora.
"""
from __future__ import annotations

from pathlib import Path

from advlora.adapters.io import load_peft_state, merge_peft_layers, save_peft
from advlora.adapters.method import AdapterMethod, register
from advlora.adapters.model import inject


class IA3(AdapterMethod):
    name = "ia3"
    summary = "peft's (IA)^3: a trainable vector per layer rescaling its output (no rank)"
    reads = ("towers", "targets")
    peft_type = "IA3"

    def attach(self, model, cfg, state, names, saved=None) -> None:
        from peft import IA3Config

        inject(model, IA3Config(target_modules=list(names), feedforward_modules=[], init_ia3_weights=True), names,
               cfg.seed)

    def save(self, model, state, folder: Path, meta: dict) -> None:
        save_peft(model, folder)

    def load(self, model, state, folder: Path, meta: dict) -> None:
        load_peft_state(model, folder)

    def merge(self, model, state) -> None:
        merge_peft_layers(model, state.layers)


register(IA3())
