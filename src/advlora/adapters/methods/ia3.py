"""``ia3``: peft's (IA)^3, one trainable vector per adapted layer that rescales its output.

peft's ``IA3Config``: ``y = l * (W x)`` with l (out) initialised to ones, so the output starts unchanged; only l
trains (no rank). Every target is treated as an attention-style layer (``feedforward_modules`` empty: the
vector scales the output, never the input). The folder is peft's own, which ``PeftModel`` loads; the vectors
are all an exact resume needs. peft's IA3 adapts Linear layers, not ``nn.MultiheadAttention``. An IA3 folder
without advlora.json (its layers' input sizes unknown) does not load in advlora.
"""
from __future__ import annotations

from advlora.adapters.io import PeftTuner
from advlora.adapters.method import register
from advlora.adapters.model import inject


class IA3(PeftTuner):
    name = "ia3"
    summary = "peft's (IA)^3: a trainable vector per layer rescaling its output (no rank)"
    family = "scaling"
    reads = ("towers", "targets")
    peft_type = "IA3"

    def attach(self, model, cfg, state, names, saved=None) -> None:
        from peft import IA3Config

        inject(model, IA3Config(target_modules=list(names), feedforward_modules=[], init_ia3_weights=True), names,
               cfg.seed)


register(IA3())
