"""What the methods with a learned text prompt share (``coop``, ``maple``): the context's settings and
initialisation, and the file it is saved in.

The seam itself (where the context enters the text tower, how the text is laid out around it) is
``advlora.models.text_prompt``; this module is the adapter side: the ``AdapterConfig`` fields that describe the
context (``n_ctx``, ``ctx_phrase``, ``init``, ``seed``, ``class_position``), its first value, and
``prompt.safetensors`` (the prompt's tensors: ``ctx``, and ``deep_ctx`` for a deep prompt) with the settings that
rebuild the layout in ``advlora.json`` (``prompt``: n_ctx, the fixed prefix, the class position). The tokenizer is
the model's own, unchanged.
"""
from __future__ import annotations

from pathlib import Path

import torch

from advlora.adapters.io import read_tensors
from advlora.errors import AdvloraError, choices_error
from advlora.models.text_prompt import POSITIONS, random_context, text_prompt_of, token_context

FILE = "prompt.safetensors"
#: how a learned text context starts (``AdapterConfig.init`` of coop and maple): the token embeddings of
#: ``ctx_phrase`` (the first, the methods' default) or N(0, 0.02^2) vectors
CONTEXT_INITS = ("phrase", "random")


def starts_from_phrase(cfg) -> bool:
    """Whether the config's context starts from ``ctx_phrase`` (``init=phrase``) rather than random vectors."""
    return cfg.init == CONTEXT_INITS[0]


def phrase_info(cfg) -> dict:
    """The phrase ``adapter info`` reports where the context starts from one (``{}`` otherwise)."""
    return {"ctx_phrase": cfg.ctx_phrase} if starts_from_phrase(cfg) else {}


def validate_context(cfg) -> None:
    """Refuse context settings no text prompt can take (one ``AdvloraError`` line)."""
    if cfg.n_ctx is not None and (isinstance(cfg.n_ctx, bool) or not isinstance(cfg.n_ctx, int) or cfg.n_ctx < 1):
        raise AdvloraError(f"adapter n_ctx must be a positive integer, got {cfg.n_ctx!r}")
    if not isinstance(cfg.ctx_phrase, str) or (starts_from_phrase(cfg) and not cfg.ctx_phrase.strip()):
        raise AdvloraError(f"adapter ctx_phrase must be a non-empty phrase with init=phrase, got {cfg.ctx_phrase!r}")
    if cfg.class_position not in POSITIONS:
        raise choices_error("adapter class_position", cfg.class_position, POSITIONS)


def initial_context(model, cfg, random_n_ctx: int) -> tuple[torch.Tensor, list[int]]:
    """(the (n_ctx, D) context, the token ids of the fixed prefix) the config starts from.

    ``init=phrase``: the token embeddings of ``ctx_phrase``; its first ``n_ctx`` tokens (all of them when
    ``n_ctx`` is None) are learned and any further ones stay fixed text before the class name (MaPLe's "a photo"
    + "of a"). ``init=random``: N(0, 0.02^2) drawn from ``seed`` for ``n_ctx`` (default ``random_n_ctx``) tokens,
    no prefix."""
    if not starts_from_phrase(cfg):
        return random_context(model, cfg.n_ctx or random_n_ctx, cfg.seed), []
    phrase = token_context(model, cfg.ctx_phrase)
    n = cfg.n_ctx or len(phrase)
    if n > len(phrase):
        raise AdvloraError(f"adapter n_ctx {n} is longer than ctx_phrase {cfg.ctx_phrase!r} ({len(phrase)} tokens); "
                           f"use init=random for more context")
    if n < len(phrase) and cfg.class_position != "end":
        raise AdvloraError("a context shorter than its phrase keeps the rest as fixed text before the class name: "
                           "class_position end only")
    prefix = list(model.tokenizer(cfg.ctx_phrase, add_special_tokens=False)["input_ids"])[n:]
    return phrase[:n], prefix


def save_text_prompt(model, folder: Path, meta: dict) -> None:
    """Write the text prompt's tensors to ``folder/prompt.safetensors`` and its layout to ``meta["prompt"]``."""
    from safetensors.torch import save_file

    prompt = text_prompt_of(model)
    save_file({k: v.detach().cpu().contiguous() for k, v in prompt.state_dict().items()}, str(folder / FILE))
    meta["prompt"] = {"tower": "text", "n_ctx": prompt.n_ctx, "width": int(prompt.ctx.shape[1]),
                      "prefix": model.tokenizer.decode(list(prompt.prefix)), "prefix_ids": list(prompt.prefix),
                      "class_position": prompt.position}


def load_text_prompt(model, folder: Path) -> None:
    """Read ``folder/prompt.safetensors`` onto the text prompt just attached; tensors of other names or shapes
    (another model, another depth) are one error line."""
    prompt = text_prompt_of(model)
    tensors, want = read_tensors(folder / FILE), prompt.state_dict()
    if tensors.keys() != want.keys() or any(tensors[k].shape != v.shape for k, v in want.items()):
        got = ", ".join(f"{k} {list(v.shape)}" for k, v in sorted(tensors.items())) or "nothing"
        raise AdvloraError(f"{folder} was made for another model: it holds {got}, the text tower takes "
                           f"{', '.join(f'{k} {list(v.shape)}' for k, v in sorted(want.items()))}")
    with torch.no_grad():
        prompt.load_state_dict(tensors)


__all__ = ["CONTEXT_INITS", "FILE", "initial_context", "load_text_prompt", "phrase_info", "save_text_prompt",
           "starts_from_phrase", "validate_context"]
