"""Saving, loading and merging adapters: the folder every method writes, each method's files by its declaration.

An adapter folder holds
- ``advlora.json``: method, config, adapted layers and their shapes, the model it was made for (every method).
- the method's own files (``AdapterMethod.save``): peft's ``adapter_config.json`` + ``adapter_model.safetensors``
  wherever peft has the format, loadable with ``peft.PeftModel.from_pretrained(base_hf_model, folder)``, plus what
  an exact resume needs (``advlora_state.safetensors`` for AdvLoRA and LoRA's residual inits; ``full_model``
  ``.safetensors`` for full fine-tuning). docs/method.md describes AdvLoRA's export as a plain peft LoRA.
A folder with only the peft files (made by other tools) loads as the method that declares its ``peft_type`` and
reads its config (``AdapterMethod.from_peft``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from advlora.adapters import method as methods
from advlora.adapters.config import AdapterConfig
from advlora.adapters.model import build, state_of
from advlora.config import from_dict
from advlora.errors import AdvloraError
from advlora.io import atomic_dir, write_json

PEFT_PREFIX = "base_model.model."
FORMAT_VERSION = 1


def save_adapter(model, out: str | Path) -> Path:
    """Write the model's adapter to folder ``out`` (atomically): advlora.json plus the method's files."""
    state = state_of(model)
    if state is None:
        raise AdvloraError("the model has no adapter to save (attach_adapter or load_adapter first)")
    if state.merged:
        raise AdvloraError("the adapter is merged into the weights: save the model with advlora.models.save_model")
    cfg = state.config
    meta = {"format": FORMAT_VERSION, "method": cfg.method, "config": cfg.to_dict(), "model": model.name_or_path,
            "arch": getattr(model, "arch", ""), "layers": state.layers}
    out = Path(out)
    with atomic_dir(out) as tmp:
        methods.get(cfg.method).save(model, state, tmp, meta)
        write_json(tmp / "advlora.json", meta)
    return out


# ---- loading ----------------------------------------------------------------------------------------------
def load_adapter(model, path: str | Path):
    """Load an adapter folder (advlora's, or a plain peft one) onto ``model`` in place; return the model."""
    path = Path(path)
    if not path.is_dir():
        raise AdvloraError(f"{path}: adapter folder not found")
    if (path / "advlora.json").exists():
        return _load_advlora(model, path)
    if (path / "adapter_config.json").exists():
        return _load_peft(model, path)
    raise AdvloraError(f"{path}: not an adapter folder (no advlora.json or adapter_config.json)")


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file of an adapter folder; a missing or corrupt file is one error line."""
    from safetensors.torch import load_file

    if not file.exists():
        raise AdvloraError(f"{file}: missing from the adapter folder")
    try:
        return load_file(str(file))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise AdvloraError(f"{file}: not a readable safetensors file ({type(e).__name__})") from None


def _check_layers(model, layers: dict[str, list[int]], path: Path) -> None:
    """Every adapted layer must exist in ``model`` as a Linear of the same shape."""
    modules = dict(model.hf_model.named_modules())
    for n, shape in layers.items():
        m = modules.get(n)
        if not isinstance(m, nn.Linear):
            raise AdvloraError(f"{path} was made for another model: it adapts layer {n!r}, which this model "
                               f"({model.name_or_path}) does not have")
        if list(m.weight.shape) != list(shape):
            raise AdvloraError(f"{path} was made for another model: layer {n} is {shape[0]} x {shape[1]} in the "
                               f"adapter but {m.weight.shape[0]} x {m.weight.shape[1]} in {model.name_or_path}")


def _load_advlora(model, path: Path):
    try:
        meta = json.loads((path / "advlora.json").read_text())
        # alpha_lr moved to the training config (train.alpha_lr); adapters saved before still load
        cfg = from_dict(AdapterConfig, {k: v for k, v in meta["config"].items() if k != "alpha_lr"}, "adapter.")
        layers = {str(k): list(v) for k, v in meta.get("layers", {}).items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AdvloraError(f"{path / 'advlora.json'}: not a valid advlora adapter description ({e})") from None
    _check_layers(model, layers, path)
    build(model, cfg, names=list(layers), saved=path)
    methods.get(cfg.method).load(model, state_of(model), path, meta)
    return model


def _load_peft(model, path: Path):
    """A plain peft folder (no advlora.json): loaded as the method that declares its peft_type and reads its config."""
    from peft import PeftConfig

    try:
        pc = PeftConfig.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001 - peft raises ValueError/TypeError/OSError on bad configs
        raise AdvloraError(f"{path / 'adapter_config.json'}: not a peft config ({str(e).splitlines()[0]})") from None
    tensors = read_tensors(path / "adapter_model.safetensors")
    ptype = str(getattr(pc.peft_type, "value", pc.peft_type))
    found = [(m, r) for m in map(methods.get, methods.names()) if m.peft_type == ptype
             for r in [m.from_peft(pc, tensors, path)] if r is not None]
    if not found:
        readers = sorted({methods.get(n).peft_type for n in methods.names()} - {None})
        raise AdvloraError(f"{path}: a peft {ptype} adapter that no method reads (peft types read: "
                           f"{', '.join(readers)}; no per-layer ranks)")
    method, (fields, layers) = found[0]
    if not layers:
        raise AdvloraError(f"{path}: adapter_model.safetensors holds no {ptype} weights")
    _check_layers(model, layers, path)
    cfg = AdapterConfig(method=method.name, **fields)
    build(model, cfg, names=list(layers), saved=path)
    method.load(model, state_of(model), path, {"format": FORMAT_VERSION, "layers": layers})
    return model


# ---- merging ----------------------------------------------------------------------------------------------
def merge_adapter(model):
    """Fold the adapter into the base weights and remove the adapter layers (for deployment); in place."""
    state = state_of(model)
    if state is None or state.merged:
        return model
    methods.get(state.config.method).merge(model, state)
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in model.hf_model.__dict__:
            delattr(model.hf_model, attr)
    state.merged = True
    model.hf_model.requires_grad_(False)
    return model


def merge_peft_layers(model, names) -> None:
    """peft's own merge of each adapted layer, then the layer replaced by its base (for the peft-based methods)."""
    for n in names:
        lay = model.hf_model.get_submodule(n)
        lay.merge(safe_merge=True)
        parent_name, _, child = n.rpartition(".")
        parent = model.hf_model.get_submodule(parent_name) if parent_name else model.hf_model
        setattr(parent, child, lay.get_base_layer())


# ---- peft's own state dict, for the methods whose folder is peft's format as peft writes it -------------------
class PeftTuner(methods.AdapterMethod):
    """A method whose layers are peft's own tuner layers (DoRA, VeRA, IA3): its folder is peft's format
    (``save_peft``), which also holds all an exact resume needs, and peft merges its layers."""

    peft_format = True

    def save(self, model, state, folder: Path, meta: dict) -> None:
        save_peft(model, folder)

    def load(self, model, state, folder: Path, meta: dict) -> None:
        load_peft_state(model, folder)

    def merge(self, model, state) -> None:
        merge_peft_layers(model, state.layers)


def save_peft(model, folder: Path) -> None:
    """peft's ``adapter_config.json`` (the config the layers were injected with) and ``adapter_model.safetensors``
    (``get_peft_model_state_dict``, keys as ``PeftModel.save_pretrained`` writes them) in ``folder``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    sd = get_peft_model_state_dict(model.hf_model)
    save_file({PEFT_PREFIX + k: v.detach().cpu().contiguous() for k, v in sd.items()},
              str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    pc = model.hf_model.peft_config["default"]
    pc.base_model_name_or_path = model.name_or_path
    pc.save_pretrained(str(folder))


def load_peft_state(model, folder: Path) -> None:
    """The weights of ``save_peft``'s ``adapter_model.safetensors`` into the injected layers; a missing or
    misshapen tensor is one error line."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    tensors = read_tensors(folder / "adapter_model.safetensors")
    sd = {k[len(PEFT_PREFIX):]: v for k, v in tensors.items() if k.startswith(PEFT_PREFIX)}
    want = get_peft_model_state_dict(model.hf_model)
    for k, v in want.items():
        if k not in sd or sd[k].shape != v.shape:
            raise AdvloraError(f"{folder}: {k} is missing from adapter_model.safetensors or has the wrong shape")
    with torch.no_grad():
        set_peft_model_state_dict(model.hf_model, sd)
