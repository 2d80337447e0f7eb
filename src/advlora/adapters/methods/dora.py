"""``dora``: peft's DoRA, LoRA with a trainable magnitude per output row (weight-decomposed low-rank adaptation).

peft's ``LoraConfig(use_dora=True)``: the layer computes ``m * (W + s B A) / ||W + s B A||`` (the norm per
output row, detached), with m set to ``||W||`` at creation, so the output starts unchanged (B = 0). A, B and m
train. Its folder is peft's own (``lora_A``, ``lora_B``, ``lora_magnitude_vector``), which ``PeftModel`` loads;
that is also all an exact resume needs. peft's DoRA adapts Linear layers, not ``nn.MultiheadAttention``.
"""
from __future__ import annotations


from advlora.adapters.io import PeftTuner
from advlora.adapters.method import register
from advlora.adapters.methods.lora import lora_shapes, peft_config
from advlora.adapters.model import inject


class Dora(PeftTuner):
    name = "dora"
    summary = "peft's DoRA: LoRA plus a trainable magnitude per output (weight-decomposed); rsLoRA scaling"
    family = "low-rank"
    reads = ("rank", "towers", "targets", "seed", "lora_alpha", "dropout", "use_rslora")
    peft_type = "LORA"
    cost_note = "the norm of W + s B A per output row, recomputed at every forward (weight-decomposed)"

    def attach(self, model, cfg, state, names, saved=None) -> None:
        lora_alpha = cfg.lora_alpha if cfg.lora_alpha is not None else cfg.rank
        inject(model, peft_config(cfg, names, lora_alpha=lora_alpha, init=True, use_rslora=cfg.use_rslora,
                                  use_dora=True), names, cfg.seed)

    def from_peft(self, pc, tensors, folder):
        if not pc.use_dora or pc.rank_pattern or pc.alpha_pattern:
            return None
        return {"rank": int(pc.r), "lora_alpha": float(pc.lora_alpha), "dropout": float(pc.lora_dropout),
                "use_rslora": bool(pc.use_rslora)}, lora_shapes(tensors, folder)

    def info(self, cfg) -> dict:
        return {"rslora": True} if cfg.use_rslora else {}


register(Dora())
