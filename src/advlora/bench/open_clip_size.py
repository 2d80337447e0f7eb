"""``advlora bench --size openclip-vit-b32``: LAION's ViT-B/32 in open_clip format, random weights.

The weights are drawn under open_clip's names and shapes (fused ``in_proj``, ``c_fc`` / ``c_proj``, ``proj``
matrices) for open_clip's ``ViT-B-32`` config (GELU, the 49,408-token text vocabulary) and read through
advlora's open_clip converter, as ``hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K`` is; so the benchmark's
ratios exist for an open_clip-format model. The tokenizer is the CLIP byte-level BPE without merges (one token
per byte: the timed text tower is the same size; no vocabulary file is needed).
"""
from __future__ import annotations

import torch
from transformers import CLIPModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from advlora.models.clip import CLIPWrapper
from advlora.models.open_clip import OPENAI_MEAN, OPENAI_STD, clip_config, convert_state_dict

#: open_clip's ViT-B-32 model config (LAION's laion2b_s34b_b79k weights use it)
LAION_VIT_B32 = {"embed_dim": 512,
                 "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}
#: bench size -> open_clip model config
OPEN_CLIP_SIZES = {"openclip-vit-b32": LAION_VIT_B32}
#: the family every open_clip size builds (its ViTs are converted into transformers CLIPs)
OPEN_CLIP_FAMILY = CLIPWrapper.arch


def random_open_clip_state(model_cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under open_clip's names for a standard ViT CLIP config (normal 0.02, unit LayerNorms)."""
    g = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    def blocks(prefix: str, width: int, layers: int, mlp: int) -> dict[str, torch.Tensor]:
        out = {}
        for i in range(layers):
            p = f"{prefix}transformer.resblocks.{i}."
            out.update({p + "attn.in_proj_weight": normal(3 * width, width),
                        p + "attn.in_proj_bias": torch.zeros(3 * width),
                        p + "attn.out_proj.weight": normal(width, width), p + "attn.out_proj.bias": torch.zeros(width),
                        p + "mlp.c_fc.weight": normal(mlp, width), p + "mlp.c_fc.bias": torch.zeros(mlp),
                        p + "mlp.c_proj.weight": normal(width, mlp), p + "mlp.c_proj.bias": torch.zeros(width),
                        **{p + f"ln_{j}.{n}": (torch.ones if n == "weight" else torch.zeros)(width)
                           for j in (1, 2) for n in ("weight", "bias")}})
        return out

    v, t, embed = model_cfg["vision_cfg"], model_cfg["text_cfg"], model_cfg["embed_dim"]
    w, patch, tw = v["width"], v["patch_size"], t["width"]
    norms = {f"{name}.{n}": (torch.ones if n == "weight" else torch.zeros)(width)
             for name, width in (("visual.ln_pre", w), ("visual.ln_post", w), ("ln_final", tw))
             for n in ("weight", "bias")}
    return {"visual.conv1.weight": normal(w, 3, patch, patch), "visual.class_embedding": normal(w),
            "visual.positional_embedding": normal((v["image_size"] // patch) ** 2 + 1, w, std=0.01),
            "visual.proj": normal(w, embed), **blocks("visual.", w, v["layers"], int(w * v.get("mlp_ratio", 4.0))),
            "token_embedding.weight": normal(t["vocab_size"], tw),
            "positional_embedding": normal(t["context_length"], tw, std=0.01),
            "text_projection": normal(tw, embed), **blocks("", tw, t["layers"], int(tw * t.get("mlp_ratio", 4.0))),
            "logit_scale": torch.tensor(2.6592), **norms}


def byte_tokenizer(context_length: int) -> CLIPTokenizer:
    """CLIP's byte-level BPE vocabulary without merges, end-of-text last (as open_clip's pooling needs)."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={tok: i for i, tok in enumerate(tokens)}, merges=[], model_max_length=context_length)


def open_clip_model(size: str = "openclip-vit-b32", seed: int = 0, model_cfg: dict | None = None) -> CLIPWrapper:
    """The named open_clip-format size (or ``model_cfg``) with random weights, converted to a CLIP wrapper."""
    cfg = model_cfg if model_cfg is not None else OPEN_CLIP_SIZES[size]
    tokenizer = byte_tokenizer(cfg["text_cfg"]["context_length"])
    config = clip_config(cfg, tokenizer)
    hf = CLIPModel(config)
    hf.load_state_dict(convert_state_dict(random_open_clip_state(cfg, seed), cfg), strict=True)
    hf.eval()
    return CLIPWrapper(hf, tokenizer, image_size=config.vision_config.image_size, mean=OPENAI_MEAN, std=OPENAI_STD,
                       name_or_path="", alias=f"random-{size}", max_length=cfg["text_cfg"]["context_length"])
