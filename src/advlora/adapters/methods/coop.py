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

from advlora.adapters.method import AdapterMethod, register
from advlora.adapters.prompt_text import (
    CONTEXT_INITS,
    initial_context,
    load_text_prompt,
    phrase_info,
    save_text_prompt,
    validate_context,
)
from advlora.errors import AdvloraError
from advlora.models.text_prompt import TextPrompt, attach_text_prompt

#: context tokens of a random initialisation that names no n_ctx
RANDOM_N_CTX = 4


class CoOp(AdapterMethod):
    name = "coop"
    family = "prompt"
    summary = "learned text context in place of a prompt's words (CoOp; adversarially trained: APT)"
    reads = ("init", "seed", "n_ctx", "ctx_phrase", "class_position", "class_specific")
    inits = CONTEXT_INITS
    default_init = CONTEXT_INITS[0]
    default_lr = 2e-3
    targets = False
    learns_class_text = True
    cost_note = ("the class prompts are re-encoded with gradient at every step and the backward pass runs through "
                 "every layer of the text tower")

    def validate(self, cfg) -> None:
        validate_context(cfg)
        if cfg.class_specific:
            raise AdvloraError("adapter method coop: class-specific context (class_specific) is not supported; "
                               "the unified context applies to any class names")

    def attach(self, model, cfg, state, names, saved=None) -> None:
        model.text_prompt_sites()    # a family without a text prompt seam: one line before any work
        ctx, prefix = initial_context(model, cfg, RANDOM_N_CTX)
        prompt = TextPrompt(ctx, position=cfg.class_position, prefix=prefix)
        attach_text_prompt(model, prompt).requires_grad_(True)
        state.report = [{"prompt": "text", "n_ctx": prompt.n_ctx, "prefix": len(prefix)}]

    def save(self, model, state, folder, meta: dict) -> None:
        save_text_prompt(model, folder, meta)

    def load(self, model, state, folder, meta: dict) -> None:
        load_text_prompt(model, folder)

    def merge(self, model, state) -> None:
        raise AdvloraError("adapter method coop: a learned prompt is context in the text tower's input, not a "
                           "weight change, and cannot be merged into the weights (load the adapter folder instead)")

    def info(self, cfg) -> dict:
        return {"init": cfg.init, **({"n_ctx": cfg.n_ctx} if cfg.n_ctx is not None else {}),
                "class_position": cfg.class_position,
                **phrase_info(cfg)}


register(CoOp())

__all__ = ["CoOp"]
