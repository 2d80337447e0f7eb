"""``coop``: CoOp's learned text context (Zhou et al., IJCV 2022); trained adversarially it is APT (Li et al.,
CVPR 2024: ``--objective apt``).

``n_ctx`` context vectors take the place of token embeddings in the text tower (``advlora.models.text_prompt``):
a class name becomes [SOS, ctx, name, ".", EOS] (``class_position`` end; middle and front as CoOp places them),
a caption [SOS, ctx, caption, EOS], and the tower pools where it pools. Every weight of the model stays frozen;
only the context trains. ``init=phrase`` starts it from the token embeddings of ``ctx_phrase`` ("a photo of a":
the class embeddings are then those of the template "a photo of a {}."); its first ``n_ctx`` tokens are learned
and any further ones stay fixed text (MaPLe's "a photo" + "of a"). ``init=random`` draws N(0, 0.02^2) (seeded
by ``seed``) for ``n_ctx`` (default 4) tokens. The context is independent of the class names, so a prompt
trained on some classes applies to any others (base-to-new) and to captions. CoOp's class-specific context
(``class_specific``) is not supported: it would tie the adapter to the training set's class names.

The folder holds ``prompt.safetensors`` (the context) and, in ``advlora.json``, the settings that rebuild the
layout (``prompt``: n_ctx, the fixed prefix, the class position); the tokenizer is the model's own, unchanged.
A prompt is no weight change, so it cannot be merged into the weights.
"""
from __future__ import annotations

from pathlib import Path

import torch

from advlora.adapters.io import read_tensors
from advlora.adapters.method import AdapterMethod, register
from advlora.errors import AdvloraError, choices_error
from advlora.models.text_prompt import (
    POSITIONS,
    TextPrompt,
    attach_text_prompt,
    random_context,
    text_prompt_of,
    token_context,
)

FILE = "prompt.safetensors"
#: context tokens of a random initialisation that names no n_ctx
RANDOM_N_CTX = 4


class CoOp(AdapterMethod):
    name = "coop"
    family = "prompt"
    summary = "learned text context in place of a prompt's words (CoOp; adversarially trained: APT)"
    reads = ("init", "seed", "n_ctx", "ctx_phrase", "class_position", "class_specific")
    inits = ("phrase", "random")
    default_init = "phrase"
    default_lr = 2e-3
    targets = False
    learns_class_text = True

    def validate(self, cfg) -> None:
        if cfg.n_ctx is not None and (isinstance(cfg.n_ctx, bool) or not isinstance(cfg.n_ctx, int)
                                      or cfg.n_ctx < 1):
            raise AdvloraError(f"adapter n_ctx must be a positive integer, got {cfg.n_ctx!r}")
        if not isinstance(cfg.ctx_phrase, str) or (cfg.init == "phrase" and not cfg.ctx_phrase.strip()):
            raise AdvloraError(f"adapter ctx_phrase must be a non-empty phrase with init=phrase, got "
                               f"{cfg.ctx_phrase!r}")
        if cfg.class_position not in POSITIONS:
            raise choices_error("adapter class_position", cfg.class_position, POSITIONS)
        if cfg.class_specific:
            raise AdvloraError("adapter method coop: class-specific context (class_specific) is not supported; "
                               "the unified context applies to any class names")

    def attach(self, model, cfg, state, names, saved=None) -> None:
        model.text_prompt_sites()    # a family without a text prompt seam: one line before any work
        prefix: list[int] = []
        if cfg.init == "phrase":
            phrase = token_context(model, cfg.ctx_phrase)
            n = cfg.n_ctx or len(phrase)
            if n > len(phrase):
                raise AdvloraError(f"adapter n_ctx {n} is longer than ctx_phrase {cfg.ctx_phrase!r} "
                                   f"({len(phrase)} tokens); use init=random for more context")
            if n < len(phrase) and cfg.class_position != "end":
                raise AdvloraError("a context shorter than its phrase keeps the rest as fixed text before the "
                                   "class name: class_position end only")
            prefix = list(model.tokenizer(cfg.ctx_phrase, add_special_tokens=False)["input_ids"])[n:]
            ctx = phrase[:n]
        else:
            ctx = random_context(model, cfg.n_ctx or RANDOM_N_CTX, cfg.seed)
        prompt = TextPrompt(ctx, position=cfg.class_position, prefix=prefix)
        attach_text_prompt(model, prompt).requires_grad_(True)
        state.report = [{"prompt": "text", "n_ctx": prompt.n_ctx, "prefix": len(prefix)}]

    def save(self, model, state, folder: Path, meta: dict) -> None:
        from safetensors.torch import save_file

        prompt = text_prompt_of(model)
        save_file({"ctx": prompt.ctx.detach().cpu().contiguous()}, str(folder / FILE))
        meta["prompt"] = {"tower": "text", "n_ctx": prompt.n_ctx, "width": int(prompt.ctx.shape[1]),
                          "prefix": model.tokenizer.decode(list(prompt.prefix)), "prefix_ids": list(prompt.prefix),
                          "class_position": prompt.position}

    def load(self, model, state, folder: Path, meta: dict) -> None:
        prompt = text_prompt_of(model)
        ctx = read_tensors(folder / FILE).get("ctx")
        if ctx is None or ctx.shape != prompt.ctx.shape:
            got = "no context" if ctx is None else f"a context of shape {tuple(ctx.shape)}"
            raise AdvloraError(f"{folder} was made for another model: it holds {got}, the text tower takes "
                               f"{tuple(prompt.ctx.shape)}")
        with torch.no_grad():
            prompt.ctx.copy_(ctx)

    def merge(self, model, state) -> None:
        raise AdvloraError("adapter method coop: a learned prompt is context in the text tower's input, not a "
                           "weight change, and cannot be merged into the weights (load the adapter folder instead)")

    def info(self, cfg) -> dict:
        return {"init": cfg.init, "n_ctx": cfg.n_ctx, "class_position": cfg.class_position,
                **({"ctx_phrase": cfg.ctx_phrase} if cfg.init == "phrase" else {})}


register(CoOp())

__all__ = ["CoOp"]
