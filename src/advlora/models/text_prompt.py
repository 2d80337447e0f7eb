"""Learned text prompts: context vectors that take the place of token embeddings inside the text tower.

A ``TextPrompt`` attached to a ``VLModel`` (``attach_text_prompt``; it is the wrapper's ``text_prompt`` submodule)
changes how text is tokenized and embedded, and nothing else:

- ``VLModel.tokenize`` (captions) and the class-prompt classifier (``advlora.models.prompts``, class names) lay
  the text out with ``n_ctx`` context *slots*: token ids ``-1 .. -n_ctx``, at the position the prompt says
  (``end``: [SOS, ctx, text, EOS]; ``front``: [SOS, text, ctx, EOS]; ``middle``: [SOS, ctx[:n//2], text,
  ctx[n//2:], EOS]; a class name's text is ``name.``, CoOp's "X X X X name."). The family's own tokenizer and
  padding policy make the rest (specials, padding to the longest caption or to ``max_length``), truncated
  ``n_ctx`` tokens earlier, so the tower pools where it always pools: CLIP at its end-of-text token (found from
  the ids, which the slots do not disturb), SigLIP at the last position of the ``max_length``-padded sequence,
  BLIP at [CLS].
- a forward pre-hook on the text tower's token-embedding module (``VLModel.text_prompt_sites``: each family's
  wrapper says where it is) reads the slots off the ids (and looks up id 0 there), and its forward hook puts
  ``context()[k]`` in place of the embedding of slot k, before the positional embedding is added. Everything
  after is the tower's own computation, so gradients flow from the text features to the context (training,
  and the attacks of evaluation when the prompt's features are read with gradient).
- deep prompts (MaPLe's text side): ``layer_context(i)`` for layers i = 1 .. ``depth``; a forward pre-hook on
  layer i replaces the slots' hidden states at its input (earlier layers' outputs at those positions are
  discarded, as MaPLe and deep VPT do). The slots of the current forward pass are the ones the embedding hook
  last read: recomputation (gradient checkpointing) of a layer after another text forward pass with another
  layout would read the wrong ones.

``TextPrompt`` holds a unified context (``ctx``, (n_ctx, D)) and optional deep contexts (``deep_ctx``,
(depth, n_ctx, D)); a subclass may compute them instead (``context``, ``layer_context``: MaPLe's coupled
prompts). ``prefix`` holds the token ids of fixed text placed between the context and the text (the tokens of an
initial phrase beyond the learned ``n_ctx``, as MaPLe keeps "of a" of "a photo of a"), kept as ids so that a
phrase split inside a word lays out exactly as the phrase does.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

from advlora.errors import AdvloraError, choices_error
from advlora.models.base import TEXT_PROMPT

#: where the class name (or caption) goes relative to the context
POSITIONS = ("end", "middle", "front")
#: the text a class name becomes before the context is laid around it (CoOp: "X X X X name.")
CLASS_TEXT = "{}."


class TextPrompt(nn.Module):
    """Learned context of the text tower (see the module docstring).

    Args:
        ctx: (n_ctx, D) initial context vectors (D: the token-embedding width).
        position: end | middle | front.
        prefix: token ids of fixed text between the context and the text (none: empty); class position end.
        deep: (depth, n_ctx, D) initial contexts of layers 1 .. depth, or None.
    """

    def __init__(self, ctx: torch.Tensor, *, position: str = "end", prefix: tuple[int, ...] = (),
                 deep: torch.Tensor | None = None) -> None:
        super().__init__()
        if position not in POSITIONS:
            raise choices_error("prompt class position", position, POSITIONS)
        if ctx.dim() != 2 or ctx.shape[0] < 1:
            raise AdvloraError(f"a text prompt's context is (n_ctx >= 1, width), got {tuple(ctx.shape)}")
        if prefix and position != "end":
            raise AdvloraError("a text prompt's fixed prefix goes between the context and the class name: "
                               "class position end only")
        self.position, self.prefix = position, tuple(int(i) for i in prefix)
        self.ctx = nn.Parameter(ctx.detach().clone().float())
        self.deep_ctx = None if deep is None else nn.Parameter(deep.detach().clone().float())
        #: False: text is tokenized without slots (``prompt_disabled``), the tower as it was
        self.enabled = True
        self._slots: torch.Tensor | None = None   # (B, L) slot index of the current forward pass, -1 elsewhere

    # ---- what the tower receives ---------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return int(self.ctx.shape[0])

    @property
    def depth(self) -> int:
        """The deep layers (1 .. depth) whose context slots are replaced; 0: shallow."""
        return 0 if self.deep_ctx is None else int(self.deep_ctx.shape[0])

    def context(self) -> torch.Tensor:
        """(n_ctx, D) vectors put in place of the slots' token embeddings."""
        return self.ctx

    def layer_context(self, index: int) -> torch.Tensor | None:
        """(n_ctx, D) hidden states of the slots at the input of layer ``index`` (>= 1), or None: left as the
        previous layer made them."""
        return None if self.deep_ctx is None or index > self.depth else self.deep_ctx[index - 1]

    # ---- tokenizing -----------------------------------------------------------------------------------------
    def tokenize(self, model, texts: list[str]) -> dict[str, torch.Tensor]:
        """Captions laid out with the context slots (each caption plays the class name)."""
        return self._layout(model, list(texts), list(texts))

    def tokenize_classes(self, model, names: list[str]) -> dict[str, torch.Tensor]:
        """Class names laid out as CoOp's prompts: the context and ``name.``, the class at ``position``."""
        return self._layout(model, [CLASS_TEXT.format(n) for n in names], list(names))

    def _layout(self, model, texts: list[str], names: list[str]) -> dict[str, torch.Tensor]:
        n, tok, fixed = self.n_ctx, model.tokenizer, list(self.prefix)
        enc = model.tokenize_plain(texts, reserve=n + len(fixed))
        ids = enc["input_ids"].tolist()
        mask = enc["attention_mask"].tolist() if "attention_mask" in enc else None
        start = _lead(tok)
        slots = [-(k + 1) for k in range(n)]
        first = {"end": n, "front": 0, "middle": n // 2}[self.position]   # slots before the text
        before = slots[:first] + fixed
        out_ids, out_mask = [], []
        for r, row in enumerate(ids):
            length = len(row) if mask is None else sum(mask[r])
            after = min(start + (len(_ids(tok, names[r])) if first < n else 0), max(start, length - 1))
            out_ids.append(row[:start] + before + row[start:after] + slots[first:] + row[after:])
            if mask is not None:
                m = mask[r]
                out_mask.append(m[:start] + [1] * len(before) + m[start:after] + [1] * (n - first) + m[after:])
        dev = enc["input_ids"].device
        out = {"input_ids": torch.tensor(out_ids, dtype=enc["input_ids"].dtype, device=dev)}
        if mask is not None:
            out["attention_mask"] = torch.tensor(out_mask, dtype=enc["attention_mask"].dtype, device=dev)
        return out

    # ---- the hooks --------------------------------------------------------------------------------------------
    def install(self, model) -> None:
        """Hook the text tower of ``model`` (the ``VLModel`` that holds ``hf_model``)."""
        embedding, layers = model.text_prompt_sites()
        width = getattr(getattr(embedding, "weight", None), "shape", (0, 0))[1]
        if int(self.ctx.shape[1]) != int(width):
            raise AdvloraError(f"a text prompt of width {self.ctx.shape[1]} does not fit the text tower's token "
                               f"embeddings (width {width})")
        if self.depth >= len(layers):
            raise AdvloraError(f"a deep text prompt of depth {self.depth + 1} needs as many text layers; the "
                               f"tower has {len(layers)}")
        embedding.register_forward_pre_hook(self._before_embedding)
        embedding.register_forward_hook(self._after_embedding)
        for i in range(1, self.depth + 1):
            layers[i].register_forward_pre_hook(functools.partial(self._before_layer, i), with_kwargs=True)

    def _before_embedding(self, module, args):
        ids = args[0]
        slot = ids < 0
        if not bool(slot.any()):
            self._slots = None
            return None
        self._slots = torch.where(slot, -ids - 1, torch.full_like(ids, -1))
        return (ids.clamp(min=0), *args[1:])

    def _after_embedding(self, module, args, out):
        return None if self._slots is None else self._place(out, self.context())

    def _before_layer(self, index: int, module, args, kwargs):
        ctx = None if self._slots is None else self.layer_context(index)
        if ctx is None:
            return None
        if args:
            return (self._place(args[0], ctx), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": self._place(kwargs["hidden_states"], ctx)}

    def _place(self, hidden: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        s = self._slots
        if s.shape != hidden.shape[:2]:
            raise AdvloraError(f"text prompt: hidden states {tuple(hidden.shape)} do not match the slots of the "
                               f"current forward pass {tuple(s.shape)}")
        values = ctx.to(device=hidden.device, dtype=hidden.dtype)[s.clamp(min=0)]
        return torch.where((s >= 0).unsqueeze(-1), values, hidden)


# ---- attaching and finding ---------------------------------------------------------------------------------
def holder(model):
    """The ``VLModel`` that holds ``hf_model`` under any ``Delegating`` views (video, prompt ensemble)."""
    while isinstance(model, nn.Module) and model._modules.get("base") is not None:
        model = model._modules["base"]
    return model


def attach_text_prompt(model, prompt: TextPrompt) -> TextPrompt:
    """Install ``prompt`` in the text tower of ``model`` and keep it as the model's ``text_prompt``."""
    base = holder(model)
    if base._modules.get(TEXT_PROMPT) is not None:
        raise AdvloraError("the model already has a learned text prompt")
    prompt.to(base.device)
    prompt.install(base)
    base.add_module(TEXT_PROMPT, prompt)
    return prompt


def text_prompt_of(model) -> TextPrompt | None:
    """The learned text prompt attached to ``model`` (or to the model under its views), or None."""
    return holder(model)._modules.get(TEXT_PROMPT)


@contextlib.contextmanager
def prompt_disabled(model) -> Iterator[None]:
    """The block sees the text tower without the learned prompt (text tokenized without slots)."""
    prompt = text_prompt_of(model)
    if prompt is None:
        yield
        return
    was, prompt.enabled = prompt.enabled, False
    try:
        yield
    finally:
        prompt.enabled = was


def token_context(model, phrase: str) -> torch.Tensor:
    """(tokens, D) token embeddings of ``phrase`` (no special tokens): a context initialised from it."""
    embedding, _ = holder(model).text_prompt_sites()
    ids = _ids(model.tokenizer, phrase)
    if not ids:
        raise AdvloraError(f"prompt phrase {phrase!r} has no tokens")
    with torch.no_grad():
        return embedding(torch.tensor([ids], device=embedding.weight.device))[0].detach().clone().float()


def random_context(model, n_ctx: int, seed: int, std: float = 0.02) -> torch.Tensor:
    """(n_ctx, D) context drawn from N(0, std^2) (CoOp's random init), seeded."""
    embedding, _ = holder(model).text_prompt_sites()
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n_ctx, embedding.weight.shape[1], generator=g) * std


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _lead(tokenizer) -> int:
    """How many special tokens the tokenizer puts before the text (CLIP, BERT: 1; SigLIP: 0)."""
    full, bare = list(tokenizer("a")["input_ids"]), _ids(tokenizer, "a")
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return i
    return 0


__all__ = ["CLASS_TEXT", "POSITIONS", "TextPrompt", "attach_text_prompt", "holder", "prompt_disabled",
           "random_context", "text_prompt_of", "token_context"]
