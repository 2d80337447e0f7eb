"""The vision-prompt seam: learned tokens and a pixel frame entering a ViT vision tower, for the prompt methods.

The family's wrapper names the modules (``VLModel.vision_sites``: embeddings, encoder layers, encoder); a
``VisionPrompts`` module is registered on its vision transformer (so its parameters count as the vision tower's,
``model.parameters()`` holds them, checkpoints and attacks see them) and enters through forward hooks:

- **frame** (``PadFrame``, TeCoA's ``PadPrompter``): added to the pixel values the embeddings receive, that is
  *after* the resize to the model's resolution and the mean/std normalisation, as TeCoA adds it
  (``prompter(clip_img_preprocessing(x))``). Attacks perturb the [0, 1] image before both, so their gradient passes
  through the frame to the image.
- **layer-0 tokens**: appended to the embeddings' output (class token and patches with their positions added),
  before CLIP's pre-LayerNorm, with no positional embedding (MaPLe's CLIP VPT and TeCoA's token prompter). VPT
  inserts them after the class token instead; the vision towers have no attention mask and the positions are
  added before the prompts, so self-attention is permutation-equivariant and the class and patch outputs are the
  same either way.
- **deep tokens** (layer i, 1 <= i < depth): replace the last n tokens at the input of encoder layer i, so the
  prompt outputs of layer i - 1 are discarded (VPT-deep, MaPLe).
- **out**: the n prompt tokens are cut from the encoder's output, so every family pools as it was pre-trained,
  over its own tokens: CLIP and BLIP at the class token, SigLIP's attention-pooling (MAP) head over the patch tokens
  only. Prompts reach the pooled feature through attention in every layer, never as pooled tokens themselves: the
  head's probe was trained to attend over patches, and a free token it attended to would let the prompt write the
  feature directly. BLIP's image states (ITM's cross-attention) keep their 1 + P tokens.

The tokens come from a *source*: a module with ``n_tokens``, ``depth`` and ``forward(layer) -> (n_tokens, width)``,
called once per layer and forward pass. ``LearnedTokens`` holds them as parameters (VPT, TeCoA's tokens); a
multimodal method (MaPLe) passes a module that computes layer i's vision prompts from its text prompts.

Zero prompts: a zero frame adds nothing (identical features). Zero *tokens* are not a no-op: they take part in
attention (and CLIP's pre-LayerNorm maps a zero vector to its bias), so what is invariant is the model with no
tokens, i.e. ``remove``.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from advlora.adapters.io import read_tensors
from advlora.adapters.method import AdapterMethod
from advlora.errors import AdvloraError
from advlora.models.family import FAMILIES

#: the attribute of the vision transformer that holds the prompt module
ATTRIBUTE = "advlora_prompt"
#: TeCoA's frame width at CLIP's 224 px (``--prompt_size 30``)
FRAME_AT_224 = 30
#: the initialisations of tokens and frame: VPT's xavier-uniform, a normal draw, zeros
INITS = ("xavier", "normal", "zeros")


class TokenSource(Protocol):
    """What ``VisionPrompts`` reads its tokens from."""

    n_tokens: int
    depth: int

    def __call__(self, layer: int) -> torch.Tensor:  # (n_tokens, width)
        ...


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def initialise(t: torch.Tensor, init: str, seed: int, fan_in: int) -> None:
    """Fill ``t`` in place: ``xavier`` (VPT: uniform(-v, v), v = sqrt(6 / (fan_in + width)), fan_in the patch
    embedding's input 3 * patch^2), ``normal`` (std 1, TeCoA's randn), ``zeros``; drawn from ``seed``."""
    with torch.no_grad():
        if init == "zeros":
            t.zero_()
        elif init == "normal":
            t.copy_(torch.randn(t.shape, generator=_generator(seed)))
        elif init == "xavier":
            v = math.sqrt(6.0 / (fan_in + t.shape[-1]))
            t.copy_(torch.rand(t.shape, generator=_generator(seed)) * 2 * v - v)
        else:
            raise AdvloraError(f"unknown prompt init {init!r} (known: {', '.join(INITS)})")


class LearnedTokens(nn.Module):
    """``depth`` x ``n_tokens`` learned vision tokens of the tower's width (VPT shallow: depth 1)."""

    def __init__(self, depth: int, n_tokens: int, width: int, *, init: str, seed: int, fan_in: int) -> None:
        super().__init__()
        self.depth, self.n_tokens = int(depth), int(n_tokens)
        self.tokens = nn.Parameter(torch.empty(self.depth, self.n_tokens, int(width)))
        initialise(self.tokens, init, seed, fan_in)

    def forward(self, layer: int) -> torch.Tensor:
        return self.tokens[layer]


def frame_width(image_size: int, width: int | None) -> int:
    """The frame width at ``image_size``: ``width``, or TeCoA's 30 px at 224 scaled (at least 1); a frame that
    leaves no interior (2 * width >= image_size) is one error line."""
    p = max(1, round(FRAME_AT_224 * image_size / 224)) if width is None else int(width)
    if p < 1 or 2 * p >= image_size:
        raise AdvloraError(f"prompt_size {p} leaves no image inside the frame at the model's {image_size} px "
                           f"(at most {(image_size - 1) // 2})")
    return p


class PadFrame(nn.Module):
    """TeCoA's ``PadPrompter``: a learned frame of width p around an S x S image, added to the normalised pixels.

    ``pad_up``, ``pad_down``: (1, 3, p, S); ``pad_left``, ``pad_right``: (1, 3, S - 2p, p); the interior is zero.
    """

    def __init__(self, image_size: int, width: int, *, init: str, seed: int) -> None:
        super().__init__()
        s, p = int(image_size), int(width)
        self.image_size, self.width = s, p
        self.pad_up = nn.Parameter(torch.empty(1, 3, p, s))
        self.pad_down = nn.Parameter(torch.empty(1, 3, p, s))
        self.pad_left = nn.Parameter(torch.empty(1, 3, s - 2 * p, p))
        self.pad_right = nn.Parameter(torch.empty(1, 3, s - 2 * p, p))
        for i, t in enumerate((self.pad_up, self.pad_down, self.pad_left, self.pad_right)):
            initialise(t, init, seed + i, 3)

    def frame(self) -> torch.Tensor:
        """The (1, 3, S, S) frame (zero inside)."""
        s, p = self.image_size, self.width
        inside = self.pad_up.new_zeros(1, 3, s - 2 * p, s - 2 * p)
        middle = torch.cat([self.pad_left, inside, self.pad_right], dim=3)
        return torch.cat([self.pad_up, middle, self.pad_down], dim=2)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if tuple(pixels.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"the frame is {self.image_size} px, the pixels {tuple(pixels.shape[-2:])}")
        return pixels + self.frame().to(pixels.dtype)


def _replace(hidden: torch.Tensor, prompts: torch.Tensor, n: int) -> torch.Tensor:
    """``hidden`` (B, T, D) with its last ``n`` tokens replaced by ``prompts`` (n, D)."""
    b = hidden.shape[0]
    return torch.cat([hidden[:, :hidden.shape[1] - n], prompts.to(hidden.dtype).expand(b, -1, -1)], dim=1)


class VisionPrompts(nn.Module):
    """Tokens (from ``source``) and a frame entering a vision tower; ``install`` hooks them in.

    The hooks are bound methods (and ``functools.partial`` of them), so ``copy.deepcopy`` of the model binds them
    to the copy's prompts, as ``advlora.models.recompute`` does for its layers.
    """

    def __init__(self, source: nn.Module | None = None, frame: PadFrame | None = None) -> None:
        super().__init__()
        self.source = source
        self.frame = frame
        self._hooks: list[tuple[nn.Module, str, int]] = []

    @property
    def n_tokens(self) -> int:
        return 0 if self.source is None else int(self.source.n_tokens)

    @property
    def depth(self) -> int:
        return 0 if self.source is None else int(self.source.depth)

    # ---- the hooks ------------------------------------------------------------------------------------------
    def _framed(self, module, args, kwargs):
        if args:
            return (self.frame(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "pixel_values": self.frame(kwargs["pixel_values"])}

    def _append(self, module, args, output):
        prompts = self.source(0).to(output.dtype).expand(output.shape[0], -1, -1)
        return torch.cat([output, prompts], dim=1)

    def _deep(self, layer: int, module, args, kwargs):
        n = self.n_tokens
        if args:
            return (_replace(args[0], self.source(layer), n), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": _replace(kwargs["hidden_states"], self.source(layer), n)}

    def _cut(self, module, args, output):
        n = self.n_tokens
        if isinstance(output, tuple):
            return (output[0][:, :output[0].shape[1] - n], *output[1:])
        output.last_hidden_state = output.last_hidden_state[:, :output.last_hidden_state.shape[1] - n]
        return output

    # ---- installing -----------------------------------------------------------------------------------------
    def check(self, sites) -> None:
        """Refuse a tower these prompts do not fit (one error line), before anything is installed."""
        if self.depth > len(sites.layers):
            raise AdvloraError(f"prompt depth {self.depth} is deeper than the vision tower's {len(sites.layers)} "
                               f"layers")
        if self.frame is not None and self.frame.image_size != sites.image_size:
            raise AdvloraError(f"the prompt frame is {self.frame.image_size} px, the model's images "
                               f"{sites.image_size} px")

    def install(self, model) -> VisionPrompts:
        """Register on ``model``'s vision transformer and hook into it (``model.vision_sites()``)."""
        sites = model.vision_sites()
        if getattr(sites.tower, ATTRIBUTE, None) is not None:
            raise AdvloraError("the vision tower already has prompts: attach to a freshly loaded model")
        self.check(sites)
        sites.tower.add_module(ATTRIBUTE, self)
        if self.frame is not None:
            self._hook(sites.embeddings, "pre", sites.embeddings.register_forward_pre_hook(self._framed,
                                                                                           with_kwargs=True))
        if self.n_tokens:
            self._hook(sites.embeddings, "post", sites.embeddings.register_forward_hook(self._append))
            for i in range(1, self.depth):
                lay = sites.layers[i]
                self._hook(lay, "pre", lay.register_forward_pre_hook(functools.partial(self._deep, i),
                                                                     with_kwargs=True))
            self._hook(sites.encoder, "post", sites.encoder.register_forward_hook(self._cut))
        return self

    def _hook(self, module: nn.Module, kind: str, handle) -> None:
        # the module and the hook's id, not the handle: a deep copy's handle would point at the original's hooks
        self._hooks.append((module, kind, handle.id))

    def remove(self, model) -> None:
        """Unhook and unregister: the tower is as it was before ``install``."""
        for module, kind, hid in self._hooks:
            for hooks in ((module._forward_pre_hooks, module._forward_pre_hooks_with_kwargs) if kind == "pre"
                          else (module._forward_hooks, module._forward_hooks_with_kwargs)):
                hooks.pop(hid, None)
        self._hooks = []
        tower = model.vision_sites().tower
        if tower._modules.get(ATTRIBUTE) is self:
            del tower._modules[ATTRIBUTE]


def prompts_of(model) -> VisionPrompts | None:
    """The vision prompts installed on ``model``, or None."""
    return getattr(model.vision_sites().tower, ATTRIBUTE, None)


# ---- what the vision-prompt methods share ----------------------------------------------------------------------
FILE = "vision_prompt.safetensors"


class VisionPromptMethod(AdapterMethod):
    """A method whose adapter is a ``VisionPrompts`` module (``build`` makes it from the config): it trains the
    prompts alone, saves them as ``vision_prompt.safetensors`` (all an exact resume needs) and cannot merge."""

    family = "prompt"

    targets = False
    inits = INITS

    @property
    def families(self) -> tuple[str, ...]:  # type: ignore[override] - read live: a family registered later counts
        """The families whose wrapper names its vision transformer (``VLModel.vision_tower``)."""
        return tuple(f.name for f in FAMILIES.values() if f.wrapper.vision_tower is not None)

    def build(self, model, cfg, sites) -> VisionPrompts:
        raise NotImplementedError

    def attach(self, model, cfg, state, names, saved=None) -> None:
        self.check(model, [])
        prompts = self.build(model, cfg, model.vision_sites())
        prompts.install(model)
        prompts.requires_grad_(True)
        state.report.append(self.shape(prompts))

    @staticmethod
    def shape(prompts: VisionPrompts) -> dict:
        return {"n_tokens": prompts.n_tokens, "depth": prompts.depth,
                "frame": 0 if prompts.frame is None else prompts.frame.width}

    def save(self, model, state, folder: Path, meta: dict) -> None:
        from safetensors.torch import save_file

        prompts = prompts_of(model)
        meta["vision_prompt"] = self.shape(prompts)
        save_file({k: v.detach().cpu().contiguous() for k, v in prompts.state_dict().items()}, str(folder / FILE))

    def load(self, model, state, folder: Path, meta: dict) -> None:
        tensors = read_tensors(folder / FILE)
        prompts = prompts_of(model)
        want = prompts.state_dict()
        if tensors.keys() != want.keys() or any(tensors[k].shape != v.shape for k, v in want.items()):
            raise AdvloraError(f"{folder} was made for another model: its prompts do not fit {model.alias} "
                               f"({', '.join(f'{k} {list(v.shape)}' for k, v in sorted(want.items()))})")
        prompts.load_state_dict(tensors)

    def merge(self, model, state) -> None:
        raise AdvloraError(f"{self.name} prompts cannot be merged into the weights (they add tokens or pixels, "
                           f"which no weight holds): load the adapter folder instead (--adapter)")

    def info(self, cfg) -> dict:
        return {k: getattr(cfg, k) for k in ("n_tokens", "depth", "prompt_size")
                if k in self.reads and getattr(cfg, k) is not None}


__all__ = ["ATTRIBUTE", "FILE", "FRAME_AT_224", "INITS", "LearnedTokens", "PadFrame", "TokenSource",
           "VisionPromptMethod", "VisionPrompts", "frame_width", "initialise", "prompts_of"]
