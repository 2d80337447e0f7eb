"""The paper's three claims, each read off an experiment's summary with this run's numbers and a verdict.

1. Conventional adaptation (clean full fine-tuning, clean LoRA) raises clean downstream r_mean but not
   robustness: the adapted model stays about as vulnerable as the frozen one.
2. Adversarial adaptation (adversarial full fine-tuning, adversarial LoRA, AdvLoRA) raises robustness, above
   what conventional adaptation reaches at the same budget.
3. AdvLoRA is more robust than adversarial LoRA and than adversarial full fine-tuning.

``claims(summary)`` is a pure function of a ``summary.json`` (``advlora demo``, ``advlora grid``): robustness is
PGD's r_mean at the first eps of the evaluation, clean is the clean r_mean of the same images. A difference
counts only when it exceeds ``TOLERANCE`` points and, with several seeds, the larger of that and the two
methods' standard deviations added; with one seed the evidence says so. A method missing from the summary
makes its claim "not measured", never a verdict.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

#: differences of at most this many r_mean points are not read as an effect (one seed, a few hundred images)
TOLERANCE = 1.0
#: the method labels playing each role (those of ``advlora demo`` and ``grid-tiny-clip``)
ZERO_SHOT = "zero-shot"
CONVENTIONAL = ("clean full FT", "clean LoRA")
ADVERSARIAL = ("adv. full FT", "adv. LoRA", "AdvLoRA")
ADVLORA = "AdvLoRA"
RIVALS = ("adv. LoRA", "adv. full FT")


class Verdict(str, Enum):
    HOLDS = "holds"
    PARTLY = "partly holds"
    FAILS = "does not hold"
    NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Score:
    """One method's mean r_mean (and its spread over seeds, 0 with one seed)."""

    mean: float
    std: float = 0.0


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, the numbers of this run that test it, and the verdict they give."""

    number: int
    statement: str
    verdict: Verdict
    evidence: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The claim as the report and the terminal print it: statement and verdict, then the evidence."""
        return [f"Claim {self.number}: {self.statement} -> {self.verdict.value.upper()}",
                *[f"  - {e}" for e in self.evidence]]


def claims(summary: dict[str, Any], dataset: str | None = None) -> list[Claim]:
    """The three claims on ``dataset`` (default: the summary's first data set)."""
    ds = dataset or summary["datasets"][0]
    res = summary.get("results", {}).get(ds, {})
    key = f"pgd@{summary['eval']['eps'][0]}"
    seeds = len(summary.get("seeds", [0]))
    clean = {label: s for label in res if (s := _score(res[label], key, "clean_same_images"))}
    robust = {label: s for label in res if (s := _score(res[label], key, "metrics"))}
    where = (f"PGD-{summary['eval'].get('steps', '')} at {summary['eval']['eps'][0]} on {ds}, "
             + (f"one seed: no spread, so differences within {TOLERANCE:g} point are read as none (the spread: "
                "`advlora grid --config grid-tiny-clip --seeds 0,1,2`)" if seeds <= 1
                else f"mean ± sd over {seeds} seeds"))
    return [_conventional(clean, robust, where), _adversarial(robust, where), _advlora(robust, where)]


def _score(entry: dict[str, Any], key: str, part: str) -> Score | None:
    stat = entry.get("robust", {}).get(key, {}).get(part, {}).get("r_mean")
    if not stat or stat.get("n", 0) == 0:
        return None
    return Score(float(stat["mean"]), float(stat.get("std") or 0.0))


def _above(a: Score, b: Score) -> float:
    """How far ``a`` is above ``b`` beyond the noise margin (positive: a clear win, negative: a clear loss)."""
    margin = max(TOLERANCE, a.std + b.std)
    d = a.mean - b.mean
    return d - margin if d > margin else d + margin if d < -margin else 0.0


def _show(label: str, s: Score) -> str:
    return f"{label} {s.mean:.1f}" + (f" ± {s.std:.1f}" if s.std else "")


def _diff(a: Score, b: Score) -> str:
    return f"{a.mean - b.mean:+.1f}"


def _conventional(clean: dict[str, Score], robust: dict[str, Score], where: str) -> Claim:
    statement = "conventional adaptation raises clean downstream r_mean but not robustness"
    present = [m for m in CONVENTIONAL if m in clean and m in robust]
    if ZERO_SHOT not in robust or not present:
        return Claim(1, statement, Verdict.NOT_MEASURED, [f"needs {ZERO_SHOT} and one of {', '.join(CONVENTIONAL)}"])
    z_clean, z_rob = clean[ZERO_SHOT], robust[ZERO_SHOT]
    evidence, parts = [], []
    best_adv = max((robust[m] for m in ADVERSARIAL if m in robust), key=lambda s: s.mean, default=None)
    for m in present:
        clean_up = _above(clean[m], z_clean) > 0
        robust_up = _above(robust[m], z_rob) > 0
        evidence.append(f"{m}: clean {clean[m].mean:.1f} vs {ZERO_SHOT} {z_clean.mean:.1f} "
                        f"({_diff(clean[m], z_clean)}); robust {robust[m].mean:.1f} vs {z_rob.mean:.1f} "
                        f"({_diff(robust[m], z_rob)})")
        if clean_up and not robust_up:
            parts.append(Verdict.HOLDS)
        elif clean_up and best_adv is not None and _above(best_adv, robust[m]) > 0:
            parts.append(Verdict.PARTLY)  # robustness rises with the clean gain, but stays below adversarial's
            evidence.append(f"{m} gains robustness along with clean r_mean, yet stays "
                            f"{best_adv.mean - robust[m].mean:.1f} points below the best adversarial method")
        else:
            parts.append(Verdict.FAILS)
    verdict = parts[0] if len(set(parts)) == 1 else Verdict.PARTLY
    return Claim(1, statement, verdict, [*evidence, where])


def _adversarial(robust: dict[str, Score], where: str) -> Claim:
    statement = "adversarial adaptation raises robustness (above zero-shot and conventional adaptation)"
    adv = [m for m in ADVERSARIAL if m in robust]
    refs = [m for m in (ZERO_SHOT, *CONVENTIONAL) if m in robust]
    if not adv or ZERO_SHOT not in refs:
        return Claim(2, statement, Verdict.NOT_MEASURED, [f"needs {ZERO_SHOT} and one of {', '.join(ADVERSARIAL)}"])
    best_ref = max(refs, key=lambda m: robust[m].mean)
    wins = [m for m in adv if _above(robust[m], robust[best_ref]) > 0]
    evidence = [f"{_show(m, robust[m])} vs the most robust non-adversarial {_show(best_ref, robust[best_ref])} "
                f"({_diff(robust[m], robust[best_ref])})" for m in adv]
    verdict = Verdict.HOLDS if len(wins) == len(adv) else Verdict.PARTLY if wins else Verdict.FAILS
    return Claim(2, statement, verdict, [*evidence, where])


def _advlora(robust: dict[str, Score], where: str) -> Claim:
    statement = "AdvLoRA is more robust than adversarial LoRA and adversarial full fine-tuning"
    rivals = [m for m in RIVALS if m in robust]
    if ADVLORA not in robust or not rivals:
        return Claim(3, statement, Verdict.NOT_MEASURED, [f"needs {ADVLORA} and one of {', '.join(RIVALS)}"])
    a = robust[ADVLORA]
    evidence, signs = [], []
    for m in rivals:
        gap = _above(a, robust[m])
        signs.append(gap)
        word = "above" if gap > 0 else "below" if gap < 0 else "level with (within the noise margin)"
        evidence.append(f"{_show(ADVLORA, a)} is {word} {_show(m, robust[m])} ({_diff(a, robust[m])})")
    if all(s > 0 for s in signs) and len(rivals) == len(RIVALS):
        verdict = Verdict.HOLDS
    elif any(s > 0 for s in signs):
        verdict = Verdict.PARTLY
    else:
        verdict = Verdict.FAILS
    return Claim(3, statement, verdict, [*evidence, where])


def claim_sections(summary: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The report section (heading, bullets) of the claims, empty when no claim could be measured."""
    found = claims(summary) if summary.get("datasets") and summary.get("eval", {}).get("eps") else []
    if all(c.verdict is Verdict.NOT_MEASURED for c in found):
        return []
    items = [f"**Claim {c.number}: {c.statement}: {c.verdict.value}.** " + "; ".join(c.evidence) for c in found]
    return [("The paper's claims on this run", items)]


__all__ = ["Claim", "Score", "Verdict", "claim_sections", "claims"]
