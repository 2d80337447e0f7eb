"""Adapter methods as declarations: nothing outside ``advlora.adapters.methods`` compares a method's name; a
throw-away method declared in this file alone trains, is attacked, saves, loads and merges through the CLI."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import torch

from advlora.adapters import method as adapter_methods

SRC = Path(__file__).resolve().parents[1] / "src" / "advlora"
METHODS_PACKAGE = SRC / "adapters" / "methods"


def name_comparisons(source: str, names: set[str]) -> list[str]:
    """The comparisons in ``source`` of something named like a method (``method``, ``cfg.method``, ...) with a
    method's name (or a tuple / list / set holding one), as 'line: text'."""
    def names_in(node) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value} & names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*(names_in(e) for e in node.elts)) if node.elts else set()
        return set()

    def mentions_method(node) -> bool:
        return any((isinstance(n, ast.Name) and "method" in n.id) or (isinstance(n, ast.Attribute) and "method" in n.attr)
                   for n in ast.walk(node))

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(names_in(s) for s in sides) and any(mentions_method(s) for s in sides if not names_in(s)):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_detector_finds_a_method_name_comparison():
    names = {"advlora", "frozen", "lora"}
    src = ("if cfg.method == 'advlora': pass\nif method != 'frozen': pass\nif m.method.method in ('lora', 'x'): pass\n"
           "if scope == 'full': pass\nif adapter_methods.get(cfg.method).trains: pass\n")
    assert [f.split(":")[0] for f in name_comparisons(src, names)] == ["1", "2", "3"]


def test_no_module_outside_the_methods_package_compares_a_method_name():
    names = set(adapter_methods.choices())
    assert {"frozen", "full", "lora", "advlora", "pissa"} <= names
    hits = [f"{p.relative_to(SRC)}:{hit}" for p in sorted(SRC.rglob("*.py")) if METHODS_PACKAGE not in p.parents
            for hit in name_comparisons(p.read_text(encoding="utf-8"), names)]
    assert not hits, "\n".join(hits)


# ---- a throw-away method, declared in this file alone --------------------------------------------------------
class ScaledLinear(torch.nn.Module):
    """``base(x) * scale``: one trainable scale per output of a frozen Linear (an IA3-like vector)."""

    def __init__(self, base: torch.nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.scale = torch.nn.Parameter(torch.ones(base.out_features, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * self.scale


class OutputScale(adapter_methods.AdapterMethod):
    name = "outscale"
    summary = "a trainable scale per output of each target layer (a test's throw-away method)"
    reads = ("towers", "targets")

    def attach(self, model, cfg, state, names, saved=None) -> None:
        for n in names:
            parent, _, child = n.rpartition(".")
            owner = model.hf_model.get_submodule(parent)
            setattr(owner, child, ScaledLinear(getattr(owner, child)))

    def save(self, model, state, folder, meta) -> None:
        from safetensors.torch import save_file

        save_file({n: model.hf_model.get_submodule(n).scale.detach().cpu().contiguous() for n in state.layers},
                  str(folder / "scales.safetensors"))

    def load(self, model, state, folder, meta) -> None:
        from safetensors.torch import load_file

        with torch.no_grad():
            for n, t in load_file(str(folder / "scales.safetensors")).items():
                model.hf_model.get_submodule(n).scale.copy_(t)

    def merge(self, model, state) -> None:
        with torch.no_grad():
            for n in state.layers:
                lay = model.hf_model.get_submodule(n)
                lay.base.weight.mul_(lay.scale[:, None])
                if lay.base.bias is not None:
                    lay.base.bias.mul_(lay.scale)
                parent, _, child = n.rpartition(".")
                setattr(model.hf_model.get_submodule(parent), child, lay.base)


def test_a_new_method_is_one_declaration(tmp_path, capsys):
    """The method above trains, is evaluated under attack, saves, loads and merges through the CLI."""
    from safetensors.torch import load_file
    from train_utils import write_data

    from advlora.cli import main
    from advlora.models import load_model, save_model
    from advlora.models.tiny import random_model

    ann = write_data(tmp_path / "data", n=8)
    save_model(random_model("clip", "test", seed=0), tmp_path / "base")
    run, ev, merged = tmp_path / "run", tmp_path / "ev", tmp_path / "merged"
    with adapter_methods.registered(OutputScale()):
        assert main(["list", "methods", "--json"]) == 0
        assert "outscale" in json.loads(capsys.readouterr().out)
        assert main(["train", "--model", str(tmp_path / "base"), "--data", str(ann), "--method", "outscale",
                     "--steps", "2", "--batch-size", "4", "--attack-steps", "1", "--data.train_split", "test",
                     "--data.val_split", "test", "--out", str(run)]) == 0
        assert "outscale: 2 steps, 512 trainable parameters" in capsys.readouterr().out
        scales = load_file(str(run / "adapter" / "scales.safetensors"))
        assert len(scales) == 16 and any((t != 1).any() for t in scales.values())     # it trained
        assert main(["eval", "--model", str(tmp_path / "base"), "--adapter", str(run / "adapter"), "--data", str(ann),
                     "--split", "test", "--attacks", "pgd", "--steps", "2", "--no-sanity", "--out", str(ev),
                     "--json"]) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert metrics["adapter"] == str(run / "adapter")
        assert metrics["robust"]["pgd@4/255"]["metrics"]["r_mean"] <= metrics["clean"]["r_mean"]
        assert main(["adapter", "merge", "--model", str(tmp_path / "base"), "--adapter", str(run / "adapter"),
                     "--out", str(merged)]) == 0
        # merged weights give the adapted model's features
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        adapted = load_model(str(tmp_path / "base"))
        from advlora.adapters import load_adapter

        load_adapter(adapted, run / "adapter")
        folded = load_model(str(merged))
        with torch.no_grad():
            assert (adapted.encode_image(x) - folded.encode_image(x)).abs().max() <= 1e-5
    assert "outscale" not in adapter_methods.choices()
