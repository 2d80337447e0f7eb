"""The field's sanity checks of a robustness evaluation, run automatically by ``evaluate_robust``.

Each check returns a ``Check``: a status (PASS / WARN / FAIL), what was measured and, when it did not pass, what
it suggests; ``str(check)`` is the line written into the report beside the numbers, ``check.to_dict()`` its JSON
form (peers.md lists why each exists):
- robust <= clean for every attack (an attack that helps is a broken attack or a broken metric);
- robust r_mean non-increasing over an eps sweep (``check_monotone``, run by the CLI over its sweep);
- near chance at linf eps = 0.5 (an unbounded-ish attack must destroy retrieval; chance r_mean depends on the
  gallery size and captions per image, ``chance_r_mean``);
- doubling the steps, or the restarts, of the reference white-box attack (PGD, else APGD) changes robust r_mean by < 1 point (else "not converged");
- a black-box attack (Square) is not better than the best white-box attack by > 2 points (else "possible gradient masking");
- the objective's input gradients are non-zero;
- attack inputs and outputs stay in [0, 1] and in the eps ball;
- the model is in eval mode during the attack and its mode is restored after.
The expensive checks (chance, convergence) run on a deterministic subset of images, through a ``Probe`` the
evaluation hands over (re-run an attack under another threat model there); which checks apply to which attack
is declared in its ``AttackSpec.checks`` (``advlora.attacks.registry``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from advlora.attacks import ThreatModel, format_eps, registry

TOL = 1e-6
STATUSES = ("PASS", "WARN", "FAIL")


@dataclass(frozen=True)
class Check:
    """The outcome of one sanity check: ``status`` (PASS / WARN / FAIL), ``message`` (what was measured) and
    ``hint`` (what a failure suggests; shown only when it did not pass)."""

    status: str
    message: str
    hint: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check status must be one of {STATUSES}, got {self.status!r}")

    @property
    def passed(self) -> bool:
        return self.status == "PASS"

    def __str__(self) -> str:
        return f"{self.status} {self.message}" + (f" ({self.hint})" if self.hint and not self.passed else "")

    def prefixed(self, prefix: str) -> Check:
        """The same check with ``prefix`` before its message (``[eps 2/255] ``, ``seed 1: ``)."""
        return Check(self.status, prefix + self.message, self.hint)

    def to_dict(self) -> dict:
        return {"status": self.status, "message": self.message, "hint": self.hint}

    @classmethod
    def from_dict(cls, d: dict | str | Check) -> Check:
        """From ``to_dict``'s form; a line of the former string form (``PASS ...``) is read too."""
        if isinstance(d, Check):
            return d
        if isinstance(d, str):
            status, _, message = d.partition(" ")
            return cls(status if status in STATUSES else "WARN", message if status in STATUSES else d)
        return cls(d["status"], d["message"], d.get("hint", ""))


def _line(ok: bool, msg: str, hint: str = "") -> Check:
    return Check("PASS" if ok else "WARN", msg, hint)


@dataclass
class Probe:
    """What the costly checks need from the evaluation, on a deterministic subset of its images.

    Attributes:
        n_images: images in the subset.
        txt2img: (T,) image index of every caption of the subset.
        images: (B, ...) a batch of its images, in [0, 1].
        objective: the image objective in use on that batch (for the gradient check).
        rerun: ``rerun(attack, threat) -> metrics`` of ``attack`` under ``threat`` on the subset.
    """

    n_images: int
    txt2img: torch.Tensor
    images: torch.Tensor
    objective: Callable[[torch.Tensor], torch.Tensor]
    rerun: Callable[[str, ThreatModel], dict]


def chance_r_mean(txt2img: torch.Tensor, n_images: int, ks: tuple[int, ...] = (1, 5, 10)) -> float:
    """Expected r_mean (percent) of a random ranking: i2t R@k = 1 - C(T - m, k) / C(T, k) for an image with m of
    the T captions, t2i R@k = k / I."""
    txt2img = torch.as_tensor(txt2img)
    n_txt = txt2img.numel()
    counts = torch.bincount(txt2img, minlength=n_images).tolist()
    vals = []
    for k in ks:
        kk = min(k, n_txt)
        vals.append(100 * sum(1 - math.comb(n_txt - m, kk) / math.comb(n_txt, kk) for m in counts) / max(n_images, 1))
    for k in ks:
        vals.append(100 * min(k, n_images) / max(n_images, 1))
    return sum(vals) / len(vals)


def check_robust_le_clean(name: str, entry: dict) -> Check:
    c, r = entry["clean"]["r_mean"], entry["metrics"]["r_mean"]
    worse = [k for k in entry["metrics"] if entry["metrics"][k] > entry["clean"][k] + TOL]
    return _line(not worse, f"{name}: robust <= clean (r_mean {r:.1f} <= {c:.1f}"
                 + (f"; higher: {', '.join(worse)}" if worse else "") + ")", "the attack improved retrieval")


def check_bounds(name: str, checks: dict, threat: ThreatModel) -> list[Check]:
    if not checks:
        return []
    eps = float(threat.eps)
    lines = [_line(checks["max_perturbation"] <= eps + 1e-5 and checks["min_pixel"] >= 0 and checks["max_pixel"] <= 1,
                   f"{name}: adversarial images in [0, 1] (min {checks['min_pixel']:.3f}, "
                   f"max {checks['max_pixel']:.3f})"
                   f" and in the {threat.norm} ball (max {checks['max_perturbation'] * 255:.3f}/255 <= "
                   f"{format_eps(eps)})", "projection bug")]
    if "eval_mode_during" in checks:
        lines.append(_line(checks["eval_mode_during"] and checks["inputs_in_range_during"],
                           f"{name}: model in eval mode and inputs in [0, 1] at every objective call",
                           "dropout or batch statistics active during the attack"))
    return lines


def check_square(out: dict, name: str = "square") -> list[Check]:
    """A black-box attack (Square, no gradients) must not beat the best white-box attack by > 2 r_mean points on
    the same images."""
    atk = out["attacks"]
    if name not in atk:
        return []
    sq = atk[name]
    if "subset" in sq:
        if "whitebox_on_subset" not in sq:
            return []
        best_name = sq["whitebox_on_subset"]["attack"]
        best = sq["whitebox_on_subset"]["metrics"]["r_mean"]
        where = f" (both on the Square subset: {sq['subset']})"
    else:
        wb = [n for n in atk if "reference" in _checks_of(n)]
        if not wb:
            return []
        best_name = min(wb, key=lambda n: atk[n]["metrics"]["r_mean"])
        best, where = atk[best_name]["metrics"]["r_mean"], ""
    r = sq["metrics"]["r_mean"]
    label = registry.get(name).label if registry.find(name) else name
    return [_line(r >= best - 2.0, f"{label} r_mean {r:.1f} vs white-box {best_name} {best:.1f}: Square not better "
                  f"by > 2 points{where}", "possible gradient masking")]


def _checks_of(name: str) -> tuple[str, ...]:
    spec = registry.find(name)
    return spec.checks if spec is not None else ()


def white_box_reference(names) -> str | None:
    """The attack among ``names`` whose declaration prefers it most as the white-box reference (PGD, APGD, ...)."""
    refs = [n for n in names if "reference" in _checks_of(n)]
    return max(refs, key=lambda n: registry.get(n).reference) if refs else None


def check_monotone(sweep: list[tuple[float, float]], name: str = "") -> Check:
    """``sweep``: (eps, robust r_mean) pairs; PASS when r_mean never increases with eps (0.05 point tolerance)."""
    pts = sorted(sweep)
    bad = [(a, b) for a, b in zip(pts, pts[1:]) if b[1] > a[1] + 0.05]
    desc = ", ".join(f"{format_eps(e)}: {r:.1f}" for e, r in pts)
    return _line(not bad, f"{name + ': ' if name else ''}robust r_mean non-increasing over eps ({desc})",
                 "the attack is not converged or gradients are masked")


def check_gradients(objective, images: torch.Tensor) -> Check:
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(objective(x).sum(), x)
    nz = (g.reshape(len(g), -1).abs().amax(1) > 0).float().mean().item() * 100
    finite = bool(torch.isfinite(g).all())
    return _line(nz == 100 and finite, f"input gradients non-zero for {nz:.0f}% of {len(g)} images"
                 f"{'' if finite else ', NOT finite'}", "gradient masking or a non-differentiable model")


def check_mode_restored(model, was_training: bool) -> Check:
    return _line(model.training == was_training, f"model mode restored after the attack "
                 f"(training={model.training}, before={was_training})", "the attack changed the model's mode")


def run_checks(threat: ThreatModel, out: dict, *, ctx_checks: dict, probe: Probe | None) -> list[Check]:
    """All checks for one ``evaluate_robust`` result ``out``; the expensive ones through ``probe``."""
    lines = []
    for name, entry in out["attacks"].items():
        lines.append(check_robust_le_clean(name, entry))
        if "bounds" in _checks_of(name):
            lines += check_bounds(name, ctx_checks.get(name, {}), threat)
    if "ensemble" in out:
        lines.append(check_robust_le_clean("ensemble", out["ensemble"]))
    for name in out["attacks"]:
        if "versus_white_box" in _checks_of(name):
            lines += check_square(out, name)
    if probe is None:
        return lines
    lines.append(check_gradients(probe.objective, probe.images))
    white = [a for a in out["attacks"] if "convergence" in _checks_of(a)]
    if not white:
        return lines
    base_attack = max(white, key=lambda n: registry.get(n).reference)
    sub = f"on {probe.n_images} images"
    base = probe.rerun(base_attack, threat)["r_mean"]
    for label, th in (("steps", threat.replace(steps=threat.steps * 2)),
                      ("restarts", threat.replace(restarts=threat.restarts * 2))):
        r = probe.rerun(base_attack, th)["r_mean"]
        lines.append(_line(abs(r - base) < 1.0, f"{base_attack} {label} x2 {sub}: robust r_mean {base:.1f} -> {r:.1f} "
                           f"(|change| {abs(r - base):.2f} < 1)", "not converged"))
    chance = chance_r_mean(probe.txt2img, probe.n_images)
    big = ThreatModel(norm="linf", eps=0.5, steps=threat.steps, restarts=1, random_start=threat.random_start,
                      seed=threat.seed)
    r = probe.rerun(base_attack, big)["r_mean"]
    lines.append(_line(r <= chance + 5.0, f"{base_attack} linf eps=0.5 {sub}: robust r_mean {r:.1f} at or below "
                       f"chance {chance:.1f} + 5", "the attack cannot break the model: gradient masking?"))
    return lines


__all__ = ["Check", "Probe", "chance_r_mean", "check_gradients", "check_monotone", "check_mode_restored",
           "check_robust_le_clean", "check_square", "run_checks", "white_box_reference"]
