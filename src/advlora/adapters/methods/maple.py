"""``maple``: multimodal prompts of depth J in both towers (MaPLe, Khattak et al., CVPR'23), trained adversarially
AdvMaPLe; with ``coupling vision-to-text`` the prompts of FAP (Zhou et al., NeurIPS'24); with ``coupling none``
(the alias ``vlp``) the independent vision-language prompts of AdvVLP.

Both towers get ``n_ctx`` prompt tokens at the input of layers 0 .. J-1 (``depth``, default MaPLe's 9, capped at
the towers' layers), each entering through its seam: the text side is a ``TextPrompt``
(``advlora.models.text_prompt``: layer 0's context in place of the first words, deep contexts replacing the slots
at layers 1 .. J-1), the vision side a ``VisionPrompts`` (``advlora.adapters.prompt_vision``: appended after the
patch embedding, replacing the last n tokens at layers 1 .. J-1) whose token source is a ``PromptCoupling``. The
coupling says which side is learned and which is computed from it, per layer, by a linear map:

- ``text-to-vision`` (MaPLe, AdvMaPLe): the text prompts are learned (layer 0 from ``ctx_phrase``, deeper ones
  N(0, 0.02^2)); vision prompt i = ``maps[i](text prompt i)``, J maps text width -> vision width.
- ``vision-to-text`` (FAP's reversed coupling, also its AdvMaPLe): layer 0 is MaPLe's (vision = ``maps[0](ctx)``);
  at layers 1 .. J-1 the vision prompts are learned (N(0, 0.02^2)) and text prompt i = ``maps[i](vision prompt
  i)``, vision width -> text width. ``DerivedText`` is the text prompt whose deep contexts are these maps.
- ``none`` (AdvVLP): both sides learned, no maps; the vision prompts N(0, 0.02^2).

Layer 0's context starts from the first ``n_ctx`` (2) tokens of ``ctx_phrase`` ("a photo of a": "a photo"
learned, "of a" kept as fixed text), or N(0, 0.02^2) with ``init=random``; the class name follows (class position
end). The deep maps start as copies of one draw of ``nn.Linear``'s initialisation (MaPLe deep-copies one layer),
layer 0's map from its own draw, all seeded by ``seed``. Every weight of the model stays frozen.

The folder holds ``prompt.safetensors`` (the text side's learned tensors: ``ctx``, ``deep_ctx``) and
``vision_prompt.safetensors`` (the coupling's maps and learned vision tokens); ``advlora.json`` records the layout,
the depth and the coupling. Prompts are no weight change, so they cannot be merged into the weights.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from advlora.adapters import prompt_text
from advlora.adapters.method import register
from advlora.adapters.prompt_vision import VisionPromptMethod, VisionPrompts
from advlora.errors import AdvloraError, choices_error
from advlora.models.text_prompt import TextPrompt, attach_text_prompt

#: which side's prompts are learned and which are computed from them (see the module docstring)
COUPLINGS = ("text-to-vision", "vision-to-text", "none")
#: MaPLe's prompt depth J and context length
DEPTH, N_CTX = 9, 2
#: the standard deviation of the learned deep prompts' initialisation (MaPLe's and FAP's)
DEEP_STD = 0.02


def _draw(shape: tuple[int, ...], g: torch.Generator, std: float = DEEP_STD) -> torch.Tensor:
    return torch.randn(shape, generator=g) * std


def _linear(n_in: int, n_out: int, g: torch.Generator) -> nn.Linear:
    """``nn.Linear(n_in, n_out)`` with its own initialisation (uniform(+-1/sqrt(n_in)) weight and bias), drawn
    from ``g``."""
    layer = nn.Linear(n_in, n_out)
    bound = 1.0 / math.sqrt(n_in)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=g) * 2 * bound - bound)
        layer.bias.copy_(torch.rand(layer.bias.shape, generator=g) * 2 * bound - bound)
    return layer


class PromptCoupling(nn.Module):
    """The vision prompts of layer i (``forward(i)``: (n_ctx, vision width)), the ``VisionPrompts`` source, and,
    for ``vision-to-text``, the text contexts of the deep layers (``text_context``).

    ``text`` is the model's text prompt; it is read, not registered here (it is the model's ``text_prompt``
    submodule), so every parameter has one name. A deep copy of the model copies both and keeps them linked.
    """

    def __init__(self, text: TextPrompt, coupling: str, depth: int, vision_width: int, seed: int) -> None:
        super().__init__()
        if coupling not in COUPLINGS:
            raise choices_error("adapter coupling", coupling, COUPLINGS)
        self.coupling, self.depth, self.n_tokens = coupling, int(depth), text.n_ctx
        object.__setattr__(self, "text", text)
        text_width = int(text.ctx.shape[1])
        g = torch.Generator().manual_seed(int(seed) + 1)
        self.maps = nn.ModuleList()
        self.register_parameter("tokens", None)
        if coupling == "none":
            self.tokens = nn.Parameter(_draw((self.depth, self.n_tokens, vision_width), g))
            return
        self.maps.append(_linear(text_width, vision_width, g))
        deep = (text_width, vision_width) if coupling == "text-to-vision" else (vision_width, text_width)
        first = _linear(*deep, g)
        for _ in range(1, self.depth):
            layer = _linear(*deep, g)
            layer.load_state_dict(first.state_dict())
            self.maps.append(layer)
        if coupling == "vision-to-text":
            self.tokens = nn.Parameter(_draw((self.depth - 1, self.n_tokens, vision_width), g))

    def forward(self, layer: int) -> torch.Tensor:
        if self.coupling == "none":
            return self.tokens[layer]
        if layer == 0:
            return self.maps[0](self.text.ctx)
        if self.coupling == "vision-to-text":
            return self.tokens[layer - 1]
        return self.maps[layer](self.text.deep_ctx[layer - 1])

    def text_context(self, layer: int) -> torch.Tensor:
        """The text context of deep layer ``layer`` (>= 1) computed from that layer's learned vision prompts."""
        return self.maps[layer](self.tokens[layer - 1])


class DerivedText(TextPrompt):
    """A text prompt whose deep contexts (layers 1 .. ``layers`` - 1) are computed by ``coupling`` (FAP): only
    layer 0's context is its own."""

    def __init__(self, ctx: torch.Tensor, *, prefix: list[int], layers: int) -> None:
        super().__init__(ctx, prefix=prefix)
        self._deep_layers = int(layers) - 1
        object.__setattr__(self, "coupling", None)    # set by ``link``; not a submodule (see ``PromptCoupling``)

    @property
    def depth(self) -> int:
        return self._deep_layers

    def link(self, coupling: PromptCoupling) -> None:
        object.__setattr__(self, "coupling", coupling)

    def layer_context(self, index: int) -> torch.Tensor | None:
        return None if index > self.depth else self.coupling.text_context(index)


class MaPLe(VisionPromptMethod):
    name = "maple"
    summary = ("MaPLe: coupled text and vision prompts of depth J (AdvMaPLe; coupling vision-to-text: FAP's; "
               "vlp: independent prompts, AdvVLP)")
    reads = ("init", "seed", "n_ctx", "ctx_phrase", "depth", "coupling")
    inits = prompt_text.CONTEXT_INITS
    default_init = prompt_text.CONTEXT_INITS[0]
    defaults = {"n_ctx": N_CTX, "coupling": "text-to-vision"}
    aliases = {"vlp": {"coupling": "none"}}
    default_lr = 3.5e-3
    learns_class_text = True
    cost_note = ("prompt tokens in both towers: the class prompts are re-encoded with gradient at every step and "
                 "the backward pass runs through every layer of both towers")

    def validate(self, cfg) -> None:
        prompt_text.validate_context(cfg)
        if cfg.class_position != "end":
            raise AdvloraError("adapter method maple keeps the class name after its context: class_position end")
        if cfg.coupling not in COUPLINGS:
            raise choices_error("adapter coupling", cfg.coupling, COUPLINGS)

    @staticmethod
    def prompt_depth(cfg, text_layers: int, vision_layers: int) -> int:
        """``cfg.depth``, or MaPLe's 9 capped at the shallower tower; a depth either tower lacks is one line."""
        if cfg.depth is None:
            return min(DEPTH, text_layers, vision_layers)
        if cfg.depth > min(text_layers, vision_layers):
            raise AdvloraError(f"adapter depth {cfg.depth} is deeper than the model's towers (text {text_layers}, "
                               f"vision {vision_layers} layers)")
        return int(cfg.depth)

    def attach(self, model, cfg, state, names, saved=None) -> None:
        self.check(model, [])                     # the family has a vision tower
        _, text_layers = model.text_prompt_sites()
        sites = model.vision_sites()
        depth = self.prompt_depth(cfg, len(text_layers), len(sites.layers))
        ctx, prefix = prompt_text.initial_context(model, cfg, N_CTX)
        g = torch.Generator().manual_seed(int(cfg.seed))
        if cfg.coupling == "vision-to-text":
            text: TextPrompt = DerivedText(ctx, prefix=prefix, layers=depth)
        else:
            text = TextPrompt(ctx, prefix=prefix, deep=_draw((depth - 1, *ctx.shape), g) if depth > 1 else None)
        coupling = PromptCoupling(text, cfg.coupling, depth, sites.width, cfg.seed)
        if isinstance(text, DerivedText):
            text.link(coupling)
        prompts = VisionPrompts(coupling.to(model.device))
        prompts.check(sites)
        attach_text_prompt(model, text).requires_grad_(True)
        prompts.install(model).requires_grad_(True)
        state.report = [{"prompt": "text", "n_ctx": text.n_ctx, "prefix": len(prefix), "depth": depth},
                        {"prompt": "vision", **self.shape(prompts), "coupling": cfg.coupling}]

    def save(self, model, state, folder, meta: dict) -> None:
        prompt_text.save_text_prompt(model, folder, meta)
        super().save(model, state, folder, meta)
        meta["prompt"].update(depth=meta["vision_prompt"]["depth"], coupling=state.config.coupling)

    def load(self, model, state, folder, meta: dict) -> None:
        prompt_text.load_text_prompt(model, folder)
        super().load(model, state, folder, meta)

    def info(self, cfg) -> dict:
        return {"init": cfg.init, "n_ctx": cfg.n_ctx, "coupling": cfg.coupling,
                **({"depth": cfg.depth} if cfg.depth is not None else {}),
                **prompt_text.phrase_info(cfg)}


register(MaPLe())

__all__ = ["COUPLINGS", "DerivedText", "MaPLe", "PromptCoupling"]
