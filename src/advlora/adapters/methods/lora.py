"""``lora``: peft's LoRA, with peft's initialisations (``init=peft|gaussian|pissa|olora``) and rsLoRA scaling.

``init=peft`` is peft's default (A kaiming-uniform, B = 0). The residual inits (pissa, olora) start from factors
of W0 and subtract ``scaling * B0 A0`` from the frozen base, as peft does; their layers keep A0, B0
(``AdvLoraLinear`` without an alpha), so the folder exports the exact difference to W0 as a rank-2r LoRA,
A' = [A; A0], B' = [s B, -s B0] (peft's own PiSSA conversion), and ``advlora_state.safetensors`` holds A, B, A0,
B0 to resume exactly. ``--method pissa`` is an alias of lora with init=pissa. The helpers here (peft config,
export, residual state) are shared with AdvLoRA, which injects the same layers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from advlora.adapters import layer as L
from advlora.adapters.io import PEFT_PREFIX, merge_peft_layers, read_tensors
from advlora.adapters.method import AdapterMethod, register
from advlora.adapters.model import inject, lora_layers
from advlora.errors import AdvloraError

STATE_FILE = "advlora_state.safetensors"
#: ``init`` -> peft's ``init_lora_weights``
PEFT_INITS = {"peft": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}
#: the inits that take ``scaling * B0 A0`` from the frozen base (and so need A0, B0 to export and resume)
RESIDUAL_INITS = ("pissa", "olora")


def peft_config(cfg, names: list[str], *, lora_alpha: float, init, use_rslora: bool = False, **extra):
    from peft import LoraConfig

    return LoraConfig(r=cfg.rank, lora_alpha=lora_alpha, target_modules=list(names), lora_dropout=cfg.dropout,
                      init_lora_weights=init, bias="none", use_rslora=use_rslora, **extra)


def read_saved(folder: Path, layers: dict[str, list[int]], rank: int) -> dict[str, dict[str, torch.Tensor]]:
    """Per layer A, B, A0, B0, alpha0 (and alpha when saved) of ``advlora_state.safetensors``, shapes checked."""
    st = read_tensors(folder / STATE_FILE)
    try:
        saved = {n: {k: st[f"{n}.{k}"] for k in ("A", "B", "A0", "B0", "alpha0")} for n in layers}
    except KeyError as e:
        raise AdvloraError(f"{folder / STATE_FILE}: missing tensor {e.args[0]}") from None
    for n, s in saved.items():
        out_f, in_f = layers[n]
        if s["A"].shape != (rank, in_f) or s["B"].shape != (out_f, rank):
            raise AdvloraError(f"{folder}: the factors of layer {n} do not have rank {rank}")
        if f"{n}.alpha" in st:
            s["alpha"] = st[f"{n}.alpha"]
    return saved


def residual_state(model) -> dict[str, torch.Tensor]:
    """What an exact resume of ``AdvLoraLinear`` layers needs: per layer A, B, A0, B0, alpha0 (and alpha)."""
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


def export_lora(model) -> tuple[dict[str, torch.Tensor], int, float]:
    """The adapter as a plain peft LoRA relative to W0: (peft state dict, rank, lora_alpha).

    A layer that keeps A0, B0 (``AdvLoraLinear``) exports with scaling 1: its scale a (AdvLoRA's alpha times
    peft's scaling, or peft's scaling) folded into B, and in residual mode the exact difference to W0 at rank 2r.
    """
    cfg = model.advlora_adapter.config
    tensors: dict[str, torch.Tensor] = {}
    rank, lora_alpha = cfg.rank, float(cfg.lora_alpha if cfg.lora_alpha is not None else cfg.rank)
    for n, lay in lora_layers(model).items():
        A = lay.lora_A[L.ADAPTER].weight.detach().float()
        B = lay.lora_B[L.ADAPTER].weight.detach().float()
        s = lay.scaling[L.ADAPTER]
        if isinstance(lay, L.AdvLoraLinear):
            a = s if lay.advlora_alpha is None else float(lay.advlora_alpha.detach()) * s
            if lay.advlora_residual:
                a0 = float(lay.advlora_alpha0) * s
                A, B = torch.cat([A, lay.advlora_A0]), torch.cat([a * B, -a0 * lay.advlora_B0], dim=1)
                rank = 2 * cfg.rank
            else:
                B = a * B
            lora_alpha = float(rank)  # scaling 1: the scale is folded into B
        tensors[f"{PEFT_PREFIX}{n}.lora_A.weight"] = A.cpu().contiguous()
        tensors[f"{PEFT_PREFIX}{n}.lora_B.weight"] = B.cpu().contiguous()
    return tensors, rank, lora_alpha


def write_export(model, state, folder: Path, extra: dict[str, torch.Tensor] | None = None, **config) -> None:
    """peft's two files of ``export_lora`` in ``folder`` (loadable with ``PeftModel.from_pretrained``); ``extra``:
    further tensors of the peft state dict (DoRA's magnitudes), ``config``: further ``LoraConfig`` fields."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    tensors, rank, lora_alpha = export_lora(model)
    folded = any(isinstance(lay, L.AdvLoraLinear) for lay in lora_layers(model).values())
    save_file({**tensors, **(extra or {})}, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    LoraConfig(r=rank, lora_alpha=lora_alpha, target_modules=sorted(state.layers), lora_dropout=state.config.dropout,
               init_lora_weights=True, bias="none", use_rslora=state.config.use_rslora and not folded,
               base_model_name_or_path=model.name_or_path, **config).save_pretrained(str(folder))


def copy_peft_lora(model, folder: Path) -> None:
    """lora_A / lora_B of every adapted layer from the folder's ``adapter_model.safetensors``."""
    tensors = read_tensors(folder / "adapter_model.safetensors")
    with torch.no_grad():
        for n, lay in lora_layers(model).items():
            for part, mod in (("lora_A", lay.lora_A[L.ADAPTER]), ("lora_B", lay.lora_B[L.ADAPTER])):
                t = tensors.get(f"{PEFT_PREFIX}{n}.{part}.weight")
                if t is None or t.shape != mod.weight.shape:
                    raise AdvloraError(f"{folder}: {part} of layer {n} is missing or has the wrong shape")
                mod.weight.copy_(t)


def lora_shapes(tensors: dict[str, torch.Tensor], folder: Path) -> dict[str, list[int]]:
    """Adapted layer -> [out, in] of a peft LoRA state dict."""
    layers: dict[str, list[int]] = {}
    for k, t in tensors.items():
        if k.startswith(PEFT_PREFIX) and k.endswith(".lora_B.weight"):
            n = k[len(PEFT_PREFIX):-len(".lora_B.weight")]
            a = tensors.get(f"{PEFT_PREFIX}{n}.lora_A.weight")
            if a is None:
                raise AdvloraError(f"{folder}: layer {n} has lora_B but no lora_A")
            layers[n] = [int(t.shape[0]), int(a.shape[1])]
    return layers


class Lora(AdapterMethod):
    name = "lora"
    summary = "peft's LoRA: low-rank update s*BA; init peft (A kaiming, B zero) | gaussian | pissa | olora; rsLoRA"
    family = "low-rank"
    reads = ("rank", "towers", "targets", "init", "seed", "lora_alpha", "dropout", "use_rslora")
    inits = tuple(PEFT_INITS)
    default_init = "peft"
    legacy_inits = ("cluster",)
    aliases = {"pissa": {"init": "pissa"}}
    peft_type = "LORA"
    peft_format = True

    def attach(self, model, cfg, state, names, saved=None) -> None:
        residual = cfg.init in RESIDUAL_INITS
        init = PEFT_INITS[cfg.init] if saved is None else False
        inject(model, peft_config(cfg, names, lora_alpha=cfg.lora_alpha if cfg.lora_alpha is not None else cfg.rank,
                                  init=init, use_rslora=cfg.use_rslora), names, cfg.seed)
        if not residual:
            return
        factors = read_saved(saved, state.layers, cfg.rank) if saved is not None else None
        for n in names:
            lay = model.hf_model.get_submodule(n)
            if factors is None:  # peft has initialised A, B and subtracted s B A from the base
                L.AdvLoraLinear.adopt(lay, lay.lora_A[L.ADAPTER].weight, lay.lora_B[L.ADAPTER].weight, 1.0,
                                      residual=True)
            else:
                lay = L.AdvLoraLinear.adopt(lay, factors[n]["A0"], factors[n]["B0"], 1.0, residual=True)
                lay.set_factors(lay.advlora_A0, lay.advlora_B0)
                lay.subtract_initial()
            state.report.append({"layer": n})

    def save(self, model, state, folder: Path, meta: dict) -> None:
        from safetensors.torch import save_file

        write_export(model, state, folder)
        if state.config.init in RESIDUAL_INITS:
            save_file(residual_state(model), str(folder / STATE_FILE))

    def load(self, model, state, folder: Path, meta: dict) -> None:
        if state.config.init not in RESIDUAL_INITS:
            copy_peft_lora(model, folder)
            return
        saved = read_saved(folder, state.layers, state.config.rank)
        for n, lay in lora_layers(model).items():
            lay.set_factors(saved[n]["A"], saved[n]["B"])

    def from_peft(self, pc, tensors, folder):
        if pc.use_dora or pc.rank_pattern or pc.alpha_pattern:
            return None
        layers = lora_shapes(tensors, folder)
        for n, shape in layers.items():
            if min(shape) < int(pc.r):
                raise AdvloraError(f"{folder}: rank {pc.r} is larger than layer {n} allows")
        return {"rank": int(pc.r), "lora_alpha": float(pc.lora_alpha), "dropout": float(pc.lora_dropout),
                "use_rslora": bool(pc.use_rslora)}, layers

    def merge(self, model, state) -> None:
        merge_peft_layers(model, state.layers)

    def info(self, cfg) -> dict:
        return {"init": cfg.init, **({"use_rslora": True} if cfg.use_rslora else {})}


register(Lora())
