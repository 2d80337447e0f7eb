"""``vera``: peft's VeRA, frozen random projections shared across layers and two trainable vectors per layer.

peft's ``VeraConfig``: ``y = W x + Λ_b B Λ_d A x`` with A (r x in) and B (out x r) random, frozen and shared by
every adapted layer (sized to the largest one, drawn from ``projection_prng_key`` = the config's ``seed``),
and the trainable diagonals λ_d (r, init 0.1) and λ_b (out, init 0, so the output starts unchanged). The
projections are not saved (``save_projection=False``): the key regenerates them, in advlora as in
``PeftModel.from_pretrained``; the folder is peft's own, and λ_d, λ_b are all an exact resume needs. peft's
VeRA adapts Linear layers, not ``nn.MultiheadAttention``. A VeRA folder without advlora.json (its layers' input
sizes unknown) does not load in advlora.
"""
from __future__ import annotations

import warnings

from advlora.adapters.io import PeftTuner
from advlora.adapters.method import register
from advlora.adapters.model import inject


class Vera(PeftTuner):
    name = "vera"
    summary = "peft's VeRA: shared frozen random projections, trainable per-layer scaling vectors"
    family = "low-rank"
    reads = ("rank", "towers", "targets", "seed", "dropout")
    peft_type = "VERA"

    def attach(self, model, cfg, state, names, saved=None) -> None:
        from peft import VeraConfig

        with warnings.catch_warnings():  # peft warns that the key, not the folder, restores the projections
            warnings.simplefilter("ignore", UserWarning)
            pc = VeraConfig(r=cfg.rank, target_modules=list(names), projection_prng_key=cfg.seed,
                            save_projection=False, vera_dropout=cfg.dropout, bias="none")
        inject(model, pc, names, cfg.seed)


register(Vera())
