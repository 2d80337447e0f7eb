"""``full``: full fine-tuning of the chosen towers; its folder holds the trained weights themselves."""
from __future__ import annotations

from pathlib import Path

import torch

from advlora.adapters.io import read_tensors
from advlora.adapters.method import AdapterMethod, register
from advlora.errors import AdvloraError

FILE = "full_model.safetensors"


class Full(AdapterMethod):
    name = "full"
    summary = "every weight of the chosen towers trained"
    family = "full"
    reads = ("towers",)
    default_lr = 1e-4
    targets = False

    def attach(self, model, cfg, state, names, saved=None) -> None:
        towers = ("vision", "text") if cfg.towers == "both" else (cfg.towers,)
        for n, p in model.hf_model.named_parameters():
            if cfg.towers == "both" or model.tower_of(n) in towers:
                p.requires_grad_(True)

    def save(self, model, state, folder: Path, meta: dict) -> None:
        from safetensors.torch import save_file

        tensors = {n: p.detach().cpu().contiguous() for n, p in model.hf_model.named_parameters() if p.requires_grad}
        meta["tensors"] = {n: list(t.shape) for n, t in tensors.items()}
        save_file(tensors, str(folder / FILE))

    def load(self, model, state, folder: Path, meta: dict) -> None:
        tensors = read_tensors(folder / FILE)
        params = dict(model.hf_model.named_parameters())
        for n, t in tensors.items():
            if n not in params or params[n].shape != t.shape:
                raise AdvloraError(f"{folder} was made for another model: weight {n} does not fit "
                                   f"{model.name_or_path}")
        with torch.no_grad():
            for n, t in tensors.items():
                params[n].copy_(t)


register(Full())
