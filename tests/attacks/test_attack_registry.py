"""The attack registry: a throw-away attack declared inside a test runs through ``evaluate_robust``, a grid
spec, the summary and the report renderer without any package file knowing its name (docs/contracts.md,
"Adding an attack"); unknown names are one line listing the registered ones; no module outside
``advlora.attacks`` compares an attack's name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from name_scan import comparisons, mentions
from train_utils import write_word_pairs

from advlora.attacks import ATTACKS, ThreatModel, registry, run_attack
from advlora.attacks.registry import AttackSpec
from advlora.data import load_dataset
from advlora.errors import AdvloraError
from advlora.evaluation.robust import AttackResult, evaluate_robust
from advlora.evaluation.sanity import Check
from advlora.experiments import backend
from advlora.experiments.grid import run_grid
from advlora.experiments.spec import eval_cells, load_grid_config, train_cells


def random_sign(objective, images: torch.Tensor, threat, *, generator: torch.Generator | None = None,
                tries: int = 2) -> torch.Tensor:
    """Per sample, the best of ``tries`` random corners of the linf ball (and the clean image)."""
    eps = float(threat.eps)
    best, best_loss = images, objective(images)
    for _ in range(tries):
        signs = torch.randint(0, 2, images.shape, generator=generator).to(images) * 2 - 1
        x = (images + eps * signs).clamp(0, 1)
        loss = objective(x)
        better = loss > best_loss
        best = torch.where(better.view(-1, *[1] * (images.dim() - 1)), x, best)
        best_loss = torch.where(better, loss, best_loss)
    return best


SPEC = AttackSpec("random-sign", "black-box", random_sign, uses=("norm", "eps", "seed"), label="RandSign",
                  options={"tries": 2}, line_keys=("objective",), checks=("bounds", "versus_white_box"))


@pytest.fixture
def throwaway():
    with registry.registered(SPEC) as spec:
        yield spec
    assert registry.find("random-sign") is None


def _data(tmp_path):
    return load_dataset(str(write_word_pairs(tmp_path)))


def test_throwaway_attack_through_evaluate_robust(tiny_clip, tmp_path, throwaway):
    data = _data(tmp_path)
    out = evaluate_robust(tiny_clip, data, ["random-sign", "pgd"], ThreatModel(eps="8/255", steps=2),
                          sanity_limit=4, options={"tries": 3})
    r = out["attacks"]["random-sign"]
    assert isinstance(r, AttackResult) and r.attack == "random-sign"
    assert r.threat == "linf eps=8/255 RandSign tries=3 objective=contrastive precision=float32"
    assert r.checks["max_perturbation"] <= 8 / 255 + 1e-6 and r.metrics["r_mean"] <= r.clean["r_mean"] + 1e-9
    assert all(isinstance(c, Check) for c in out["sanity"])
    text = "\n".join(map(str, out["sanity"]))
    assert "random-sign: adversarial images in [0, 1]" in text
    assert "RandSign r_mean" in text and "white-box pgd" in text      # its declared black-box check ran
    assert json.loads(json.dumps(r.to_dict()))["threat"] == r.threat
    # the image-attack entry point runs it too (the caller's objective)
    x = data.load_images(tiny_clip.image_size)[:2]
    assert "random-sign" not in ATTACKS   # ATTACKS is the training attacks' table, fixed at import
    with pytest.raises(AdvloraError, match="unknown attack"):
        run_attack("random-sign", lambda z: z.sum((1, 2, 3)), x, ThreatModel())


def test_throwaway_attack_through_grid_spec_and_report(tiny_clip, tmp_path, throwaway, monkeypatch):
    (tmp_path / "data").mkdir()
    data = _data(tmp_path / "data")
    grid = {"name": "t", "model": "tiny-clip", "datasets": ["d1"], "seeds": [0],
            "methods": [{"label": "zero-shot", "method": "frozen"}],
            "eval": {"attacks": ["pgd", "random-sign"], "eps": ["4/255"], "steps": 2, "limit": 6, "sanity_limit": 4}}
    cfg = load_grid_config(None, base=grid)
    assert [c.attacks for c in eval_cells(cfg, train_cells(cfg)[0])] == [("pgd", "random-sign")]

    def train_run(cfg, method, run_dict, out, on_step=None):
        out.mkdir(parents=True, exist_ok=True)
        return {"trainable": 0, "total": 10, "share": 0.0, "train_time_s": 0.0}

    def evaluate(cfg, model, data_spec, attacks, eps, sanity=False, seed=0, provenance=None):
        res = evaluate_robust(tiny_clip, data, attacks, ThreatModel(eps=eps, steps=cfg.eval.steps, seed=seed),
                              sanity=sanity, sanity_limit=cfg.eval.sanity_limit)
        res.pop("protocol")
        return {**res, "records": []}     # the grid's results files are test_grid's concern

    monkeypatch.setattr(backend, "train_run", train_run)
    monkeypatch.setattr(backend, "load_trained", lambda cfg, method, run: method)
    monkeypatch.setattr(backend, "evaluate", evaluate)
    summary, table = run_grid(cfg, tmp_path / "grid")
    assert "RandSign" in table and "linf eps=4/255 RandSign tries=2 objective=contrastive precision=float32" in table
    s = json.loads((tmp_path / "grid" / "summary.json").read_text())
    assert "random-sign@4/255" in s["methods"]["zero-shot"]["robust"]
    md = (tmp_path / "grid" / "report.md").read_text()
    assert "RandSign" in md and "random-sign: adversarial images in [0, 1]" in md
    # the report leads with the verdict; the full list of checks is folded below it, in md and html alike
    assert md.split("\n")[2].startswith("**Sanity verdict: ") and "<details><summary>All " in md
    assert "<details><summary>All " in (tmp_path / "grid" / "report.html").read_text()


def test_unknown_names_list_the_registry(tiny_clip, tmp_path):
    with pytest.raises(AdvloraError,
                       match=r"unknown attack 'random-sign' \(valid: apgd, apgd-margin, apgd-t, fgsm, joint"):
        registry.get("random-sign")
    with pytest.raises(AdvloraError, match="unknown attack 'random-sign'"):
        load_grid_config(None, base={"methods": [{"label": "x"}], "eval": {"attacks": ["random-sign"]}})
    with pytest.raises(AdvloraError, match="declared twice"):
        registry.register(AttackSpec("pgd", "white-box", random_sign))
    with pytest.raises(AdvloraError, match="unknown attack kind"):
        AttackSpec("x", "grey-box", random_sign)


def test_every_declaration_is_complete():
    """Every registered attack has a known kind, reads known ThreatModel fields and writes a threat line."""
    th = ThreatModel(eps="2/255", steps=3)
    for spec in registry.specs():
        line = spec.line(th, {}, {"objective": "contrastive", "gallery": "full"})
        assert line and (spec.kind in ("text",) or line.startswith("linf eps=2/255")), spec.name
    assert registry.get("apgd-margin").objective == "margin" and "objective=margin" in \
        registry.get("apgd-margin").line(th, {}, {"objective": "contrastive"})
    assert registry.result_key("pgd", "4/255") == "pgd@4/255" and registry.split_key("pgd@4/255") == ("pgd", "4/255")


def test_cli_lists_the_registry(capsys):
    from advlora.cli import main

    assert main(["attack", "--attack", "list"]) == 0
    printed = capsys.readouterr().out
    for name in registry.names():
        assert name in printed
    assert main(["attack", "--attack", "nope", "--model", "tiny-clip"]) == 2
    assert "unknown attack 'nope' (valid: apgd, apgd-margin" in capsys.readouterr().err


def test_grid_spec_accepts_every_registered_attack():
    """A grid can run any registered attack, the standard suite and the text and joint attacks included."""
    names = ["standard", "apgd-margin", "apgd-t", "text", "joint"]
    cfg = load_grid_config(None, base={"methods": [{"label": "x", "method": "frozen"}], "eval": {"attacks": names}})
    assert cfg.eval.attacks == names and set(names) <= set(registry.names())
    assert registry.get("standard").kind == "suite"
    line = registry.get("standard").line(ThreatModel(eps="2/255"), {}, {"itm": False})
    for budget in ("APGD steps=100", "APGD-T steps=100", "targets=9", "Square queries=5000 objective=margin"):
        assert budget in line, budget
    assert "rerank" not in line
    assert "objective=rerank" in registry.get("standard").line(ThreatModel(), {}, {"itm": True})


# ---- no attack name compared outside the attacks package ---------------------------------------------------
SRC = Path(__file__).resolve().parents[2] / "src" / "advlora"
ATTACKS_PACKAGE = SRC / "attacks"
#: attack names that are also ordinary words of the code (the text tower, a caption's modality): a comparison
#: with one counts only when the other side names an attack
WORDS = {"text"}


def attack_name_comparisons(source: str, names: set[str]) -> list[str]:
    """The comparisons in ``source`` of something with an attack's name (or a tuple / list / set holding one), as
    'line: text'. A comparison with a kind (``spec.kind == "joint"``: ``registry.KINDS``, some of which an attack
    shares its name with) is not one; nor is one with a word of ``WORDS`` unless the other side mentions
    ``attack``."""
    def counts(named: set[str], others: list) -> bool:
        if any(mentions(s, "kind") for s in others):
            return False
        return bool(named - WORDS) or any(mentions(s, "attack") for s in others)

    return comparisons(source, names, counts)


def test_the_detector_finds_an_attack_name_comparison():
    names = {"pgd", "square", "joint", "text"}
    src = ("if r['attack'] == 'pgd': pass\nif a != 'square': pass\nif 'pgd' not in o.ranks: pass\n"
           "if name in ('x', 'joint'): pass\nif attack == 'text': pass\n"
           "if spec.kind == 'joint': pass\nif tower not in ('vision', 'text'): pass\nif 'text' in layer: pass\n"
           "if registry.get(a).kind != 'black-box': pass\n")
    assert [f.split(":")[0] for f in attack_name_comparisons(src, names)] == ["1", "2", "3", "4", "5"]


def test_no_module_outside_the_attacks_package_compares_an_attack_name():
    names = set(registry.names())
    assert {"pgd", "fgsm", "apgd", "square", "joint", "text", "standard"} <= names
    assert ATTACKS_PACKAGE.is_dir() and (SRC / "evaluation" / "robust.py").is_file()   # the tree is read
    hits = [f"{p.relative_to(SRC)}:{hit}" for p in sorted(SRC.rglob("*.py")) if ATTACKS_PACKAGE not in p.parents
            for hit in attack_name_comparisons(p.read_text(encoding="utf-8"), names)]
    assert not hits, "\n".join(hits)
