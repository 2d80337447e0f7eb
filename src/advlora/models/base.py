"""The model contract every backend implements: pixel-space image encoder, text encoder, logit scale.

Images enter in pixel space [0, 1], shape (B, 3, H, W); resizing to the model's resolution and mean/std
normalisation happen inside ``encode_image``, so attacks and their eps live in pixel space.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from advlora.errors import AdvloraError
from advlora.losses import softmax_contrastive

#: the attribute of a ``VLModel`` that holds an attached learned text prompt (``advlora.models.text_prompt``)
TEXT_PROMPT = "text_prompt"
#: prompt modules held by the wrapper (not by ``hf_model``) -> the tower they belong to
PROMPT_TOWERS = {TEXT_PROMPT: "text"}


@dataclass(frozen=True)
class VisionSites:
    """Where prompts enter a ViT vision tower: modules of ``hf_model`` (``VLModel.vision_sites``).

    Attributes:
        tower: the vision transformer; prompt modules are registered on it, so they count as the vision tower's.
        embeddings: ``(pixel_values (B, 3, S, S) normalised, ...) -> (B, T, width)``: patch (and class) tokens
            with their positions, before any encoder layer.
        layers: the encoder layers in order, each called with the hidden states (B, T, width) first.
        encoder: runs ``layers``; its output's ``last_hidden_state`` is the sequence after the last layer, which the
            family then pools (CLIP and BLIP at the class token, SigLIP with its attention-pooling head).
        width: the hidden size; patch: the patch side in pixels; image_size: the side the embeddings read.
    """

    tower: nn.Module
    embeddings: nn.Module
    layers: Sequence[nn.Module]
    encoder: nn.Module
    width: int
    patch: int
    image_size: int


class VLModel(nn.Module):
    """Thin wrapper over a Hugging Face dual encoder.

    Attributes:
        hf_model: the underlying ``transformers`` model (hand it to peft or any other tool).
        name_or_path: the hub id or folder it was loaded from, which ``from_pretrained`` reads (for ``tiny-clip``
            its cached folder; "" for a model built from a config, as transformers' own ``name_or_path``).
        alias: the name it was asked for (``tiny-clip``, a hub id, a folder), for reports and logs.
        tokenizer: the Hugging Face tokenizer saved with the checkpoint.
        image_size: input resolution of the vision tower.
    """

    arch: ClassVar[str] = ""
    #: default adapter targets per tower: leaf module names of ``nn.Linear`` layers.
    default_targets: ClassVar[dict[str, list[str]]] = {}
    #: module-name prefixes (relative to ``hf_model``) of each tower.
    tower_prefixes: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: ``F.interpolate`` mode of the resize to the model's resolution (the processor's resample filter)
    resize_mode: ClassVar[str] = "bilinear"
    #: tokenize policy: "longest" (pad to the batch's longest caption; the mask hides padding) or "max_length"
    #: (pad every caption to ``max_length``, as models pooled at the last position were trained)
    text_padding: ClassVar[str] = "longest"
    #: whether ``hf_model.set_attn_implementation`` may switch the attention kernel
    attention_selectable: ClassVar[bool] = True
    #: the vision transformer (relative to ``hf_model``) whose ``embeddings``, ``encoder`` and ``encoder.layers``
    #: vision prompts enter (``vision_sites``); None: the family takes no vision prompts
    vision_tower: ClassVar[str | None] = None
    #: where learned text prompts enter (``advlora.models.text_prompt``), relative to ``hf_model``: the text
    #: tower's token-embedding module and the list of its transformer layers (None: the family takes none)
    text_token_embedding: ClassVar[str | None] = None
    text_layers: ClassVar[str | None] = None

    def __init__(self, hf_model: nn.Module, tokenizer, *, image_size: int, mean, std, name_or_path: str,
                 max_length: int = 77, alias: str | None = None) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.name_or_path = str(name_or_path)
        self.alias = str(alias) if alias is not None else self.name_or_path
        self.max_length = int(max_length)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    # ---- helpers -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Resize (differentiably) to the model's resolution and apply mean/std: the model's own preprocessing."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode=self.resize_mode,
                                   align_corners=False, antialias=False)
        dtype = next(self.hf_model.parameters()).dtype
        return ((images - self.mean) / self.std).to(dtype)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenize captions, padded as ``text_padding`` says, truncated to the model's maximum length; with a
        learned text prompt attached (``advlora.models.text_prompt``), its context slots go into every caption."""
        if isinstance(texts, str):
            texts = [texts]
        prompt = self._modules.get(TEXT_PROMPT)
        if prompt is not None and prompt.enabled:
            return prompt.tokenize(self, list(texts))
        return self.tokenize_plain(texts)

    def tokenize_plain(self, texts: list[str], reserve: int = 0) -> dict[str, torch.Tensor]:
        """``tokenize`` without a prompt, truncated to ``reserve`` tokens fewer than the maximum length (and, for
        ``max_length`` padding, padded to it): room for ``reserve`` context slots."""
        padding = True if self.text_padding == "longest" else self.text_padding
        enc = self.tokenizer(list(texts), padding=padding, truncation=True, max_length=self.max_length - reserve,
                             return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def text_prompt_sites(self) -> tuple[nn.Module, list[nn.Module]]:
        """(the text tower's token-embedding module, its transformer layers in order): where a learned text prompt
        replaces token embeddings and, deep, the hidden states at the input of later layers; a family that
        declares neither is one error line."""
        if self.text_token_embedding is None or self.text_layers is None:
            raise AdvloraError(f"the {self.arch or type(self).__name__} family takes no learned text prompt (its "
                               f"wrapper declares no text token embedding)")
        return (self.hf_model.get_submodule(self.text_token_embedding),
                list(self.hf_model.get_submodule(self.text_layers)))

    def _as_tokens(self, texts) -> dict[str, torch.Tensor]:
        return texts if isinstance(texts, dict) or hasattr(texts, "keys") else self.tokenize(texts)

    def tower_of(self, module_name: str) -> str | None:
        """Which tower ("vision", "text") a module name (relative to ``hf_model``, or a prompt module's name
        relative to the wrapper) belongs to."""
        for prefix, tower in PROMPT_TOWERS.items():
            if module_name == prefix or module_name.startswith(prefix + "."):
                return tower
        for tower, prefixes in self.tower_prefixes.items():
            if module_name.startswith(prefixes):
                return tower
        return None

    @classmethod
    def input_size(cls, processor: Any, config: Any) -> int:
        """The side of the square input: the processor's output (its crop when it crops, else its resize
        target), else the vision config's ``image_size``."""
        if processor is not None:
            for v in (getattr(processor, "crop_size", None), getattr(processor, "size", None)):
                side = v if isinstance(v, int) or v is None else (getattr(v, "height", None)
                                                                  or getattr(v, "shortest_edge", None))
                if isinstance(side, int):
                    return side
        return int(config.vision_config.image_size)

    def vision_sites(self) -> VisionSites:
        """The modules vision prompts enter (``advlora.adapters.prompt_vision``); a family without a
        ``vision_tower`` is one error line."""
        if self.vision_tower is None:
            raise AdvloraError(f"the {self.arch or 'unknown'} family does not say where its vision tokens enter "
                               f"(VLModel.vision_tower): it takes no vision prompts")
        tower = self.hf_model.get_submodule(self.vision_tower)
        vc = self.hf_model.config.vision_config
        return VisionSites(tower=tower, embeddings=tower.embeddings, layers=list(tower.encoder.layers),
                           encoder=tower.encoder, width=int(vc.hidden_size), patch=int(vc.patch_size),
                           image_size=self.image_size)

    def recompute_layers(self) -> list[nn.Module]:
        """The layers ``advlora.models.recompute.enable_recompute`` checkpoints: the transformer layers."""
        return [m for m in self.hf_model.modules() if isinstance(m, GradientCheckpointingLayer)]

    # ---- training hooks ------------------------------------------------------------------------
    @property
    def logit_bias(self) -> torch.Tensor | None:
        """Added to the scaled similarities by sigmoid-loss models (SigLIP); None for softmax models."""
        return None

    def contrastive_loss(self, image_features: torch.Tensor, text_features: torch.Tensor,
                         positives: torch.Tensor | None = None, scale: torch.Tensor | None = None) -> torch.Tensor:
        """The family's batch contrastive loss (training and pre-training): symmetric softmax InfoNCE here.

        Args: unit-norm (B, D) image and (T, D) text features; (B, T) bool positives (default the diagonal);
        ``scale``: the multiplier of cosines (default ``logit_scale``).
        """
        return softmax_contrastive(image_features, text_features, self.logit_scale if scale is None else scale,
                                   None, positives)

    def temperature(self) -> nn.Parameter:
        """The learnable log of ``logit_scale`` that pre-training optimises."""
        return self.hf_model.logit_scale

    def keep_temperature(self, log_scale: torch.Tensor) -> None:
        """Store a pre-trained ``temperature()`` where the checkpoint keeps it (a parameter already is)."""

    # ---- the contract ------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) embeddings (unit norm when ``normalize``)."""
        raise NotImplementedError

    def encode_text(self, texts, normalize: bool = True) -> torch.Tensor:
        """list of N captions (or tokens from ``tokenize``) -> (N, D) embeddings."""
        raise NotImplementedError

    @property
    def logit_scale(self) -> torch.Tensor:
        """Multiplier of cosine similarities to logits (CLIP's exp(logit_scale), BLIP's 1 / temp)."""
        raise NotImplementedError

    @property
    def has_itm(self) -> bool:
        return False

    def forward(self, images: torch.Tensor, texts) -> torch.Tensor:
        """Logits (B_images, N_texts): ``logit_scale * cos(image, text)``."""
        return self.logit_scale * self.encode_image(images) @ self.encode_text(texts).t()
