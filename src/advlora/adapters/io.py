"""Saving, loading and merging adapters, in peft's format plus the extra state AdvLoRA needs to resume.

An adapter folder holds
- ``adapter_config.json`` + ``adapter_model.safetensors``: a plain peft LoRA relative to the original weights W0,
  loadable with ``peft.PeftModel.from_pretrained(base_hf_model, folder)``. lora: peft's own weights. pissa and
  advlora in residual mode: the exact difference to W0 as a rank-2r LoRA, A' = [A; A0], B' = [a B, -a0 B0]
  (a = alpha for advlora, peft's scaling for pissa), the way peft converts PiSSA. advlora in zero_alpha mode:
  rank r with alpha folded into B. The exported scaling is 1 except for lora.
- ``advlora.json``: method, config, adapted layers and their shapes, the model it was made for.
- ``advlora_state.safetensors`` (pissa, advlora): per layer A, B, A0, B0, alpha, alpha0, to resume training exactly.
- ``full_model.safetensors`` (full): the trainable weights (names relative to ``hf_model``).
A folder with only the peft files (made by other tools) loads as a plain ``lora`` adapter.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from advlora.adapters import layer as L
from advlora.adapters.config import AdapterConfig
from advlora.adapters.model import build, lora_layers, state_of
from advlora.config import from_dict
from advlora.errors import AdvloraError
from advlora.io import atomic_dir, write_json

PEFT_PREFIX = "base_model.model."
FORMAT_VERSION = 1


def export_lora(model) -> tuple[dict[str, torch.Tensor], int, float]:
    """The adapter as a plain peft LoRA relative to W0: (peft state dict, rank, lora_alpha)."""
    state = state_of(model)
    cfg = state.config
    tensors: dict[str, torch.Tensor] = {}
    rank, lora_alpha = cfg.rank, cfg.scaling * cfg.rank
    for n, lay in lora_layers(model).items():
        A = lay.lora_A[L.ADAPTER].weight.detach().float()
        B = lay.lora_B[L.ADAPTER].weight.detach().float()
        s = lay.scaling[L.ADAPTER]
        if cfg.method in ("pissa", "advlora"):
            a = float(lay.advlora_alpha.detach()) * s if cfg.method == "advlora" else s
            if lay.advlora_residual:
                a0 = float(lay.advlora_alpha0) * s
                A, B = torch.cat([A, lay.advlora_A0]), torch.cat([a * B, -a0 * lay.advlora_B0], dim=1)
                rank = 2 * cfg.rank
            else:
                B = a * B
            lora_alpha = rank  # scaling 1: the scale is folded into B
        tensors[f"{PEFT_PREFIX}{n}.lora_A.weight"] = A.cpu().contiguous()
        tensors[f"{PEFT_PREFIX}{n}.lora_B.weight"] = B.cpu().contiguous()
    return tensors, rank, float(lora_alpha)


def save_adapter(model, out: str | Path) -> Path:
    """Write the model's adapter to folder ``out`` (atomically): peft's files plus advlora's state."""
    from safetensors.torch import save_file

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
        if cfg.method == "full":
            tensors = {n: p.detach().cpu().contiguous() for n, p in model.hf_model.named_parameters()
                       if p.requires_grad}
            meta["tensors"] = {n: list(t.shape) for n, t in tensors.items()}
            save_file(tensors, str(tmp / "full_model.safetensors"))
        elif cfg.method in ("lora", "pissa", "advlora"):
            from peft import LoraConfig

            tensors, rank, lora_alpha = export_lora(model)
            save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
            LoraConfig(r=rank, lora_alpha=lora_alpha, target_modules=sorted(state.layers), lora_dropout=cfg.dropout,
                       init_lora_weights=True, bias="none",
                       base_model_name_or_path=model.name_or_path).save_pretrained(str(tmp))
            if cfg.method != "lora":
                save_file(_advlora_state(model), str(tmp / "advlora_state.safetensors"))
        write_json(tmp / "advlora.json", meta)
    return out


def _advlora_state(model) -> dict[str, torch.Tensor]:
    out = {}
    for n, lay in lora_layers(model).items():
        out[f"{n}.A"] = lay.lora_A[L.ADAPTER].weight.detach()
        out[f"{n}.B"] = lay.lora_B[L.ADAPTER].weight.detach()
        out[f"{n}.A0"] = lay.advlora_A0
        out[f"{n}.B0"] = lay.advlora_B0
        out[f"{n}.alpha0"] = lay.advlora_alpha0.reshape(())
        if lay.advlora_alpha is not None:
            out[f"{n}.alpha"] = lay.advlora_alpha.detach().reshape(())
    return {k: v.float().cpu().contiguous().clone() for k, v in out.items()}


# ---- loading ----------------------------------------------------------------------------------------------
def load_adapter(model, path: str | Path):
    """Load an adapter folder (advlora's, or a plain peft LoRA) onto ``model`` in place; return the model."""
    path = Path(path)
    if not path.is_dir():
        raise AdvloraError(f"{path}: adapter folder not found")
    if (path / "advlora.json").exists():
        return _load_advlora(model, path)
    if (path / "adapter_config.json").exists():
        return _load_peft(model, path)
    raise AdvloraError(f"{path}: not an adapter folder (no advlora.json or adapter_config.json)")


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
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
    if cfg.method == "full":
        tensors = _read_tensors(path / "full_model.safetensors")
        params = dict(model.hf_model.named_parameters())
        for n, t in tensors.items():
            if n not in params or params[n].shape != t.shape:
                raise AdvloraError(f"{path} was made for another model: weight {n} does not fit {model.name_or_path}")
        build(model, cfg)
        with torch.no_grad():
            for n, t in tensors.items():
                params[n].copy_(t)
        return model
    if cfg.method == "frozen":
        return build(model, cfg)
    if cfg.method == "lora":
        tensors = _read_tensors(path / "adapter_model.safetensors")
        build(model, cfg, names=list(layers))
        _copy_lora(model, tensors, path)
        return model
    st = _read_tensors(path / "advlora_state.safetensors")
    try:
        saved = {n: {k: st[f"{n}.{k}"] for k in ("A", "B", "A0", "B0", "alpha0")} for n in layers}
    except KeyError as e:
        raise AdvloraError(f"{path / 'advlora_state.safetensors'}: missing tensor {e.args[0]}") from None
    for n, s in saved.items():
        out_f, in_f = layers[n]
        if s["A"].shape != (cfg.rank, in_f) or s["B"].shape != (out_f, cfg.rank):
            raise AdvloraError(f"{path}: the factors of layer {n} do not have rank {cfg.rank}")
    build(model, cfg, saved, names=list(layers))
    with torch.no_grad():
        for n, lay in lora_layers(model).items():
            lay.set_factors(saved[n]["A"], saved[n]["B"])
            if isinstance(lay.advlora_alpha, nn.Parameter) and f"{n}.alpha" in st:
                lay.advlora_alpha.fill_(float(st[f"{n}.alpha"]))
    return model


def _load_peft(model, path: Path):
    """A plain peft LoRA folder (no advlora.json): loaded as method ``lora``."""
    from peft import LoraConfig

    try:
        pc = LoraConfig.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001 - peft raises ValueError/TypeError/OSError on bad configs
        raise AdvloraError(f"{path / 'adapter_config.json'}: not a peft LoRA config ({str(e).splitlines()[0]})") from None
    if pc.use_dora or pc.rank_pattern or pc.alpha_pattern or pc.use_rslora:
        raise AdvloraError(f"{path}: only plain LoRA adapters are supported (no DoRA, rsLoRA or per-layer ranks)")
    tensors = _read_tensors(path / "adapter_model.safetensors")
    layers: dict[str, list[int]] = {}
    for k, t in tensors.items():
        if k.startswith(PEFT_PREFIX) and k.endswith(".lora_B.weight"):
            n = k[len(PEFT_PREFIX):-len(".lora_B.weight")]
            a = tensors.get(f"{PEFT_PREFIX}{n}.lora_A.weight")
            if a is None:
                raise AdvloraError(f"{path}: layer {n} has lora_B but no lora_A")
            layers[n] = [int(t.shape[0]), int(a.shape[1])]
    if not layers:
        raise AdvloraError(f"{path}: adapter_model.safetensors holds no LoRA weights")
    _check_layers(model, layers, path)
    cfg = AdapterConfig(method="lora", rank=int(pc.r), lora_alpha=float(pc.lora_alpha), dropout=float(pc.lora_dropout))
    for n, shape in layers.items():
        if min(shape) < cfg.rank:
            raise AdvloraError(f"{path}: rank {cfg.rank} is larger than layer {n} allows")
    build(model, cfg, names=list(layers))
    _copy_lora(model, tensors, path)
    return model


def _copy_lora(model, tensors: dict[str, torch.Tensor], path: Path) -> None:
    with torch.no_grad():
        for n, lay in lora_layers(model).items():
            for part, mod in (("lora_A", lay.lora_A[L.ADAPTER]), ("lora_B", lay.lora_B[L.ADAPTER])):
                t = tensors.get(f"{PEFT_PREFIX}{n}.{part}.weight")
                if t is None or t.shape != mod.weight.shape:
                    raise AdvloraError(f"{path}: {part} of layer {n} is missing or has the wrong shape")
                mod.weight.copy_(t)


# ---- merging ----------------------------------------------------------------------------------------------
def merge_adapter(model):
    """Fold the adapter into the base weights and remove the adapter layers (for deployment); in place."""
    state = state_of(model)
    if state is None or state.merged:
        return model
    for n, lay in lora_layers(model).items():
        lay.merge(safe_merge=True)
        parent_name, _, child = n.rpartition(".")
        parent = model.hf_model.get_submodule(parent_name) if parent_name else model.hf_model
        setattr(parent, child, lay.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in model.hf_model.__dict__:
            delattr(model.hf_model, attr)
    state.merged = True
    model.hf_model.requires_grad_(False)
    return model
