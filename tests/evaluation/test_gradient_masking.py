"""Worst case by outcome and the checks that catch obfuscated gradients.

- Every attack returns, per sample, a point whose retrieval outcome (rank of the best positive, ties by loss)
  is at least as bad as that of every point it evaluated, the clean image included.
- A model whose input gradients are obfuscated while its clean outputs are unchanged (an 8-bit rounding of the
  input plus a zero-valued, wildly oscillating term that owns the gradient) is flagged by the standard suite's
  checks; the unmodified model is not.
"""
from __future__ import annotations

import copy
import json
import math
import types

import pytest
import torch

from advlora.attacks import ThreatModel, apgd, fgsm, pgd, registry, square
from advlora.attacks import objectives as O
from advlora.attacks.apgd_t import apgd_targeted
from advlora.attacks.attack_objective import TargetFamily, Wrapper
from advlora.attacks.registry import AttackSpec, SuiteMember
from advlora.evaluation.retrieval import encode_texts
from advlora.evaluation.robust import evaluate_robust

WORDS = "red blue green cat dog house tree car apple sun moon star".split()


class Recorder(Wrapper):
    """Wraps a ranked objective (forwarding what it declares) and records every point evaluated with its rank
    and loss; it hides a clean outcome known without a forward, so the clean image is evaluated and recorded."""

    clean_outcome = None

    def __init__(self, objective, seen):
        super().__init__(objective)
        self.objective, self.seen = objective, seen

    def __call__(self, x):
        loss = self.objective(x)
        b = len(self.seen[0][0]) if self.seen else len(x)     # targets in one pass: record each target's rows
        for s in range(0, len(x), b):
            self.seen.append((x[s:s + b].detach().clone(), self.objective.last_rank[s:s + b].clone(),
                              loss[s:s + b].detach().clone()))
        return loss


class RecordingFamily(TargetFamily):
    def __init__(self, family, seen):
        self.family, self.seen, self.n_targets = family, seen, family.n_targets

    def target(self, j):
        return Recorder(self.family.target(j), self.seen)

    def targets_of(self, js):
        return Recorder(self.family.targets_of(js), self.seen)


def _worse_or_equal(rank, loss, ranks, losses):
    """Per sample: (rank, loss) lexicographically >= every recorded (rank, loss) of that sample."""
    return ((rank[None] > ranks) | ((rank[None] == ranks) & (loss[None] >= losses - 1e-6))).all(dim=0)


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd", "square", "apgd-t"])
def test_worst_case_is_never_better_than_a_point_evaluated(tiny_clip, name):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=g)
    caps = [f"{WORDS[i]} {WORDS[(i + 4) % 12]}" for i in range(6)] + [f"a {w}" for w in WORDS[:6]]
    tf = encode_texts(tiny_clip, caps).clone()
    pos = torch.zeros(6, 12, dtype=torch.bool)
    pos[torch.arange(6), torch.arange(6)] = True
    pos[torch.arange(6), torch.arange(6) + 6] = True
    seen: list = []
    eps = 8 / 255
    if name == "apgd-t":
        adv = apgd_targeted(RecordingFamily(O.TargetedDLR(tiny_clip, tf, pos, x, n_targets=3), seen), x,
                            ThreatModel(eps=eps, steps=4), generator=g)
        check = O.TargetedDLR(tiny_clip, tf, pos, x, n_targets=3).target(0)
    else:
        obj = Recorder(O.contrastive(tiny_clip, tf, pos), seen)
        fn = {"fgsm": lambda: fgsm(obj, x, ThreatModel(eps=eps)),
              "pgd": lambda: pgd(obj, x, ThreatModel(eps=eps, steps=4, restarts=2), generator=g),
              "apgd": lambda: apgd(obj, x, ThreatModel(eps=eps, steps=5, restarts=2), generator=g),
              "square": lambda: square(obj, x, ThreatModel(eps=eps), queries=20, generator=g)}[name]
        adv = fn()
        check = O.contrastive(tiny_clip, tf, pos)
    assert (adv - x).abs().max() <= eps + 1e-6
    assert any(torch.equal(s[0], x) for s in seen), "the clean image is a candidate"
    with torch.no_grad():
        check(adv)
    rank = check.last_rank
    ranks = torch.stack([s[1] for s in seen])                       # (calls, B)
    assert (rank[None] >= ranks).all(), (name, rank, ranks.max(0).values)
    if name != "apgd-t":  # the losses of different targets' objectives are not one scale
        with torch.no_grad():
            loss = check(adv)
        assert _worse_or_equal(rank, loss, ranks, torch.stack([s[2] for s in seen])).all()


def _crafted_data(model, folder, n=12, steps=2):
    """Images pushed towards their own caption by a few PGD steps from grey, saved as 8-bit PNGs: a random
    model with non-trivial clean recall (clean i2t R@1 about 33 % of 12 images)."""
    from PIL import Image

    from advlora.data import load_dataset

    caps = [f"{WORDS[i]} {WORDS[(i * 5 + 3) % 12]}" for i in range(n)]
    obj = O.contrastive(model, encode_texts(model, caps).clone(), torch.eye(n, dtype=torch.bool))
    x = pgd(lambda z: -obj(z), torch.full((n, 3, 32, 32), 0.5), ThreatModel(eps=0.5, steps=steps, step_size=0.02),
            generator=torch.Generator().manual_seed(0))
    recs = []
    for i in range(n):
        Image.fromarray((x[i].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(folder / f"{i}.png")
        recs.append({"image": f"{i}.png", "captions": [caps[i]]})
    (folder / "ann.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return load_dataset(str(folder / "ann.jsonl"))


def obfuscated(model):
    """The same model with obfuscated input gradients: the input is rounded to 8 bits (the clean images are
    8-bit, so clean outputs are unchanged; rounding has zero gradient) plus 1e3 * (sin(1e4 x) - itself,
    detached), which is zero in the forward pass and owns a shattered gradient of size 1e7 in the backward."""
    m = copy.deepcopy(model)
    normalize = m.normalize_pixels

    def normalize_pixels(self, x):
        s = torch.sin(1e4 * x)
        return normalize(torch.round(x * 255) / 255 + 1e3 * (s - s.detach()))

    m.normalize_pixels = types.MethodType(normalize_pixels, m)
    return m


#: the standard suite's members at a budget a unit test can afford
SMALL = AttackSpec("standard-small", "suite", None, uses=("norm", "eps", "seed"), label="standard-small",
                   checks=("bounds",),
                   members=(SuiteMember("apgd-ce", "apgd", objective="contrastive", changes={"steps": 20}),
                            SuiteMember("apgd-t", "apgd-t", changes={"steps": 20}, options={"targets": 3}),
                            SuiteMember("square", "square", objective="margin", options={"queries": 300})))


@pytest.fixture(scope="module")
def crafted(tiny_clip, tmp_path_factory):
    return _crafted_data(tiny_clip, tmp_path_factory.mktemp("crafted"))


def _flags(model, data, suite, eps):
    out = evaluate_robust(model, data, [suite], ThreatModel(eps=eps), sanity_limit=12)
    return out, [c for c in out["sanity"] if not c.passed]


def test_obfuscated_gradients_are_flagged_and_the_plain_model_is_not(tiny_clip, crafted):
    obf = obfuscated(tiny_clip)
    x = crafted.load_images(tiny_clip.image_size)
    with torch.no_grad():   # clean outputs unchanged
        assert torch.allclose(obf.encode_image(x), tiny_clip.encode_image(x), atol=1e-6)
    with registry.registered(SMALL):
        out, flags = _flags(tiny_clip, crafted, "standard-small", "2/255")
        assert out["clean"]["i2t_r1"] > 20 and flags == [], [str(c) for c in flags]
        assert out["verdict"].startswith("no sign of gradient masking (")
        assert out["attacks"]["standard-small"]["metrics"]["i2t_r1"] < out["clean"]["i2t_r1"]
        out, flags = _flags(obf, crafted, "standard-small", "2/255")
    assert any("first-order" in c.message for c in flags)
    assert not out["verdict"].startswith("no sign")
    for c in flags:
        assert c.hint and "try" in c.hint          # each flag says what it suggests and what to try


@pytest.mark.slow
@pytest.mark.parametrize("eps", ["1/255", "2/255", "4/255"])
def test_standard_suite_flags_obfuscation_only(tiny_clip, crafted, eps):
    _, flags = _flags(tiny_clip, crafted, "standard", eps)
    assert flags == [], [str(c) for c in flags]
    _, flags = _flags(obfuscated(tiny_clip), crafted, "standard", eps)
    assert any("first-order" in c.message for c in flags)


def _wrapped(model, f):
    """``model`` with ``f`` applied to its pixels before they are normalised."""
    m = copy.deepcopy(model)
    normalize = m.normalize_pixels
    m.normalize_pixels = types.MethodType(lambda self, x: normalize(f(x)), m)
    return m


def at_scale(model, scale: float):
    """The same model with its logit scale set to ``scale`` (a real CLIP's is 100; the tiny model's 14.3)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.hf_model.logit_scale.fill_(math.log(scale))
    return m


def quantized(model):
    """The input rounded to 8 bits (clean outputs unchanged): every input gradient is exactly zero."""
    return _wrapped(model, lambda x: torch.round(x * 255) / 255)


def misleading(model):
    """The gradient is the true one on the 8-bit grid (the clean images) and reversed off it (same forward):
    one step from the clean image (FGSM) ascends, an iterative attack off the grid descends."""
    def f(x):
        off = ((x - torch.round(x * 255) / 255).abs() > 1e-6).to(x)
        return x - 2 * off * (x - x.detach())
    return _wrapped(model, f)


def test_the_plain_model_at_logit_scale_100_raises_no_flag(tiny_clip, crafted):
    with registry.registered(SMALL):
        out, flags = _flags(at_scale(tiny_clip, 100.0), crafted, "standard-small", "2/255")
    assert flags == [], [str(c) for c in flags]
    assert out["attacks"]["standard-small"]["metrics"]["i2t_r1"] < out["clean"]["i2t_r1"]
    text = "\n".join(c.message for c in out["sanity"])
    for needle in ("standard-small/apgd-ce: input gradients non-zero at 12 of 12 start points",
                   "standard-small/apgd-t: input gradients non-zero at 36 of 36 start points",
                   "output range on 12 images", "FGSM vs standard-small/apgd-ce i2t R@1 ",
                   "FGSM vs standard-small/apgd-ce i2t R@10 ", "per sample on i2t rank at R@1:",
                   "per sample on i2t rank at R@10:", "5 calls on 12 images agree", "all finite"):
        assert needle in text, needle


@pytest.mark.parametrize("masked, eps, needles", [
    (quantized, "2/255", ("standard-small/apgd-ce: input gradients non-zero at 0 of 12",
                          "standard-small/apgd-t: input gradients non-zero at 0 of 36")),
    (lambda m: at_scale(m, 1e4), "2/255", ("output range", "standard-small/apgd-ce: input gradients non-zero")),
    (misleading, "2.5/255", ("FGSM vs standard-small/apgd-ce i2t R@1 ", "FGSM vs standard-small/apgd-ce i2t R@10 ")),
], ids=["zero-gradients", "saturated-logits", "fgsm-beats-apgd"])
def test_each_new_check_fires_on_a_model_masked_its_way(tiny_clip, crafted, masked, eps, needles):
    with registry.registered(SMALL):
        out, flags = _flags(masked(tiny_clip), crafted, "standard-small", eps)
    flagged = [c.message for c in flags]
    for needle in needles:
        assert any(needle in m for m in flagged), (needle, flagged)
    for c in flags:
        assert c.hint and "try" in c.hint
