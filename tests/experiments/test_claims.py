"""The paper's claims read off a summary: each verdict follows the numbers, and missing methods are not judged."""
from __future__ import annotations

import pytest

from advlora.experiments.claims import Verdict, claim_sections, claims


def summary(clean: dict[str, float], robust: dict[str, float], std: float = 0.0, seeds: int = 1) -> dict:
    """A summary.json shaped like ``collect``'s, with one PGD@4/255 cell per method."""
    stat = lambda v: {"mean": v, "std": std, "n": seeds}  # noqa: E731
    res = {m: {"robust": {"pgd@4/255": {"metrics": {"r_mean": stat(robust[m])},
                                        "clean_same_images": {"r_mean": stat(clean[m])}}}} for m in clean}
    return {"datasets": ["emoji-downstream"], "seeds": list(range(seeds)), "eval": {"eps": ["4/255"], "steps": 10},
            "results": {"emoji-downstream": res}}


CLEAN = {"zero-shot": 30.0, "clean full FT": 60.0, "clean LoRA": 55.0, "adv. full FT": 50.0, "adv. LoRA": 48.0,
         "AdvLoRA": 49.0}


def test_the_paper_as_written_holds_every_claim():
    rob = {"zero-shot": 10.0, "clean full FT": 10.5, "clean LoRA": 9.0, "adv. full FT": 30.0, "adv. LoRA": 28.0,
           "AdvLoRA": 33.0}
    got = claims(summary(CLEAN, rob))
    assert [c.verdict for c in got] == [Verdict.HOLDS] * 3
    assert "one seed" in got[0].evidence[-1] and "+30.0" in got[0].evidence[0]


def test_verdicts_follow_the_numbers():
    rob = {"zero-shot": 10.0, "clean full FT": 20.0, "clean LoRA": 18.0, "adv. full FT": 30.0, "adv. LoRA": 18.5,
           "AdvLoRA": 29.5}
    c1, c2, c3 = claims(summary(CLEAN, rob))
    assert c1.verdict is Verdict.PARTLY  # robustness rises with the clean gain, but stays below adversarial's
    assert c2.verdict is Verdict.PARTLY  # adv. LoRA is level with clean full FT (within a point)
    assert c3.verdict is Verdict.PARTLY  # above adv. LoRA, level with adv. full FT
    rob["AdvLoRA"] = 15.0
    assert claims(summary(CLEAN, rob))[2].verdict is Verdict.FAILS


def test_spread_over_seeds_widens_the_margin():
    rob = {"zero-shot": 10.0, "clean full FT": 10.0, "clean LoRA": 10.0, "adv. full FT": 30.0, "adv. LoRA": 28.0,
           "AdvLoRA": 31.5}
    assert claims(summary(CLEAN, rob))[2].verdict is Verdict.HOLDS
    noisy = claims(summary(CLEAN, rob, std=1.5, seeds=3))[2]  # +1.5 over adv. full FT is now within the noise
    assert noisy.verdict is Verdict.PARTLY and "3 seeds" in noisy.evidence[-1] and "± 1.5" in noisy.evidence[0]


def test_missing_methods_are_not_measured_and_leave_no_section():
    only = {"zero-shot": 30.0}
    got = claims(summary(only, {"zero-shot": 10.0}))
    assert all(c.verdict is Verdict.NOT_MEASURED for c in got)
    assert claim_sections(summary(only, {"zero-shot": 10.0})) == []


@pytest.mark.parametrize("k", [1, 2, 3])
def test_each_claim_prints_its_verdict(k):
    rob = {m: 10.0 for m in CLEAN}
    c = claims(summary(CLEAN, rob))[k - 1]
    assert c.lines()[0].startswith(f"Claim {k}: ") and c.verdict.value.upper() in c.lines()[0]
