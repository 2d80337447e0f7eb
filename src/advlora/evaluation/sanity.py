"""The field's sanity checks of a robustness evaluation, run automatically by ``evaluate_robust``.

Each check returns a ``Check``: a status (PASS / WARN / FAIL), what was measured and, when it did not pass, what
it suggests; ``str(check)`` is the line written into the report beside the numbers, ``check.to_dict()`` its JSON
form; docs/evaluation.md says how to read each one:
- robust <= clean on the attacked side (an attack that helps is a broken attack or a broken metric);
- robust r_mean non-increasing over an eps sweep (``check_monotone``, run by the CLI over its sweep);
- the reference white-box attack at linf eps = 0.5 without random start reaches chance (``chance_r_mean``);
- doubling the steps, or the restarts, of the reference white-box attack (PGD, else APGD) changes robust
  r_mean by < 1 point (else "not converged");
- per sample, on i2t rank, at R@1 and at the exit rank: images a black-box attack (Square) breaks that every
  white-box attack left intact, at most AutoAttack's 0.2 % of the images (``checks.check_square_sr``); and
  Square not better than the best white-box attack by > 2 r_mean points;
- every objective a gradient-based attack maximises has a non-zero, finite input gradient at each point its
  attack starts from (AutoAttack's ``check_zero_gradients``), and the loss of the objective in use rises along
  a small gradient step as its directional derivative predicts (first-order check: fails on obfuscated
  gradients);
- the scores are finite logits, not probabilities (AutoAttack's ``check_range_output``), and not saturated: no
  image's best positive leads its best negative by more than the gap at which the softmax is one-hot in the
  scores' precision (a cross-entropy gradient is then exactly zero);
- FGSM is not stronger than the reference iterative attack at R@1 or at the exit rank (a single step that beats
  many: masked gradients near the clean image);
- the model is deterministic: five calls on one batch agree to a relative 1e-4 and no top-1 caption changes
  (AutoAttack's ``check_randomized``; ``probes.is_randomized``);
- a white-box attack at eps > 0 moves some image's rank when clean recall is well above chance;
- a transfer attack from a surrogate is not stronger than the white-box attacks;
- attack inputs and outputs are finite and stay in [0, 1] and in the eps ball;
- the model is in eval mode during the attack and its mode is restored after.
``verdict(checks)`` is the line a report leads with.
The expensive checks (chance, convergence) run on a deterministic subset of images, through a ``Probe`` the
evaluation hands over (re-run an attack under another threat model there); which checks apply to which attack
is declared in its ``AttackSpec.checks`` (``advlora.attacks.registry``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from advlora.attacks import ThreatModel, format_eps, registry
from advlora.attacks._utils import ascent_direction, loss_and_grad
from advlora.evaluation.results import KS

TOL = 1e-6
STATUSES = ("PASS", "WARN", "FAIL")
#: AutoAttack's ``check_square_sr``: the share of images Square alone may break
SQUARE_SHARE = 0.002


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


def _rel(ok: bool, holds: str, fails: str) -> str:
    """The relation a check's line prints: the one it tests when it passes, its negation when it fails, so that
    a flagged line never states a false inequality."""
    return holds if ok else fails


@dataclass
class Outcomes:
    """Per-sample image-to-text outcomes of the attacks run on one set of images: the rank of each image's best
    positive, clean and per attack (with the attack's kind), for the per-sample black-box vs white-box check."""

    clean: torch.Tensor
    ranks: dict = field(default_factory=dict)
    kinds: dict = field(default_factory=dict)

    def add(self, key: str, kind: str, ranks: torch.Tensor) -> None:
        self.ranks[key] = ranks.detach().cpu()
        self.kinds[key] = kind

    def update(self, other: Outcomes) -> None:
        """Add every outcome of ``other`` (on the same images), in its order."""
        for key, ranks in other.ranks.items():
            self.add(key, other.kinds[key], ranks)


@dataclass
class Probe:
    """What the costly checks need from the evaluation, on a deterministic subset of its images.

    Attributes:
        n_images: images in the subset.
        txt2img: (T,) image index of every caption of the subset.
        images: (B, ...) a batch of its images, in [0, 1].
        objective: the image objective in use on that batch (for the gradient check).
        rerun: ``rerun(key, threat, attack=None, ranks=False) -> metrics`` of the attack run as ``key`` (its
            objective and options; ``attack``: another registered attack on them) under ``threat`` on the
            subset; with ``ranks``, ``(metrics, per-image i2t ranks)``.
        runs: ``key -> (attack name, the threat model it ran under)`` for every image attack ``rerun`` knows.
        chance: the subset's chance r_mean (None: ``chance_r_mean`` of its ``txt2img``).
        starts: ``key -> (objective, start points)`` of every gradient-based attack of ``runs`` on the batch
            (``probes.starts``): the zero-gradient check.
        scores: (B, T) the batch's scores against the gallery (logit scale x cosine), and ``positives`` (B, T)
            its captions: the output-range check.
    """

    n_images: int
    txt2img: torch.Tensor
    images: torch.Tensor
    objective: Callable[[torch.Tensor], torch.Tensor]
    rerun: Callable[[str, ThreatModel], dict]
    runs: dict = field(default_factory=dict)
    chance: float | None = None
    starts: dict = field(default_factory=dict)
    scores: torch.Tensor | None = None
    positives: torch.Tensor | None = None


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


def check_robust_le_clean(name: str, entry, kind: str | None = None) -> Check:
    """The attacked side cannot retrieve better than clean: image-to-text recall for attacks that perturb images
    (text-to-image recall ranks the clean captions against a gallery of perturbed images, and may rise), and
    text-to-image recall for text attacks; every metric for an attack of unknown kind."""
    side = {"text": "t2i_"}.get(kind, "i2t_" if kind else "")
    c, r = entry["clean"]["r_mean"], entry["metrics"]["r_mean"]
    worse = [k for k in entry["metrics"] if k.startswith(side) and entry["metrics"][k] > entry["clean"][k] + TOL]
    what = {"i2t_": " on i2t", "t2i_": " on t2i"}.get(side, "")
    return _line(not worse, f"{name}: robust {_rel(not worse, '<=', '>')} clean{what} (r_mean {r:.1f} vs {c:.1f}"
                 + (f"; higher: {', '.join(worse)}" if worse else "") + ")",
                 "the attack improved retrieval: a broken attack or metric")


def _radius(r: float, norm: str) -> str:
    """A measured perturbation as the threat line writes its radius: ``3.998/255`` under linf, ``0.4999`` under l2."""
    return f"{r * 255:.3f}/255" if norm == "linf" else f"{r:.4f}"


def check_bounds(name: str, checks: dict, threat: ThreatModel) -> list[Check]:
    if not checks:
        return []
    eps = float(threat.eps)
    bad = int(checks.get("non_finite", 0))
    in_ball = checks["max_perturbation"] <= eps + 1e-5
    in_range = checks["min_pixel"] >= 0 and checks["max_pixel"] <= 1
    lines = [_line(in_ball and in_range and bad == 0,
                   f"{name}: adversarial images {_rel(in_range, 'in', 'NOT in')} [0, 1] (min "
                   f"{checks['min_pixel']:.3f}, max {checks['max_pixel']:.3f})"
                   f" and {_rel(in_ball, 'in', 'NOT in')} the {threat.norm} ball (max "
                   f"{_radius(checks['max_perturbation'], threat.norm)} {_rel(in_ball, '<=', '>')} "
                   f"{threat.eps_text})" + (f"; {bad} images NOT finite (NaN or inf)" if bad else ", all finite"),
                   "projection bug, or a NaN from a division by a zero norm in the attack")]
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
    good = r >= best - 2.0
    return [_line(good, f"{label} r_mean {r:.1f} vs white-box {best_name} {best:.1f}: Square "
                  f"{_rel(good, 'not better', 'better')} by > 2 points{where}", "possible gradient masking")]


def _checks_of(name: str) -> tuple[str, ...]:
    spec = registry.find(name)
    return spec.checks if spec is not None else ()


def white_box_reference(names) -> str | None:
    """The attack among ``names`` whose declaration prefers it most as the white-box reference (PGD, APGD, ...)."""
    refs = [n for n in names if "reference" in _checks_of(n)]
    return max(refs, key=lambda n: registry.get(n).reference) if refs else None


def check_monotone(sweep: list[tuple[float, float]], name: str = "", norm: str = "linf") -> Check:
    """``sweep``: (eps, robust r_mean) pairs under ``norm``; PASS when r_mean never increases with eps (0.05 point
    tolerance)."""
    pts = sorted(sweep)
    bad = [(a, b) for a, b in zip(pts, pts[1:]) if b[1] > a[1] + 0.05]
    desc = ", ".join(f"{format_eps(e, norm)}: {r:.1f}" for e, r in pts)
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


def _spec_of(key: str, entry) -> registry.AttackSpec | None:
    """The declaration behind a result: its ``attack`` (suite members: ``standard/apgd-t`` -> ``apgd-t``)."""
    name = entry.get("attack", key) if hasattr(entry, "get") else key
    return registry.find(name) or registry.find(key)


def check_first_order(objective, images: torch.Tensor, norm: str, h: float = 1e-3) -> Check:
    """The loss must rise along a small steepest-ascent step about as its directional derivative predicts:
    actual change / (gradient . step) has a median >= 0.5 over the images. Obfuscated gradients (shattered,
    stochastic or a non-differentiable input stage) predict a rise that the forward pass does not show."""
    loss, grad = loss_and_grad(objective, images)
    x1 = (images + h * ascent_direction(grad, norm)).clamp(0, 1)
    predicted = (grad * (x1 - images)).reshape(len(images), -1).sum(1)
    with torch.no_grad():
        actual = objective(x1) - loss
    ok = predicted.abs() > 1e-12
    if not bool(ok.any()):
        return _line(False, "first-order check: zero predicted change for every image",
                     "suggests zero input gradients; try another objective or look for a detached input stage")
    ratio = float((actual[ok] / predicted[ok]).median())
    good = ratio >= 0.5
    return _line(good, f"first-order check on {len(images)} images: loss change along a {h:g} "
                 f"gradient step / its prediction, median {ratio:.2f} {_rel(good, '>=', '<')} 0.5",
                 "suggests obfuscated gradients (the gradient does not describe the forward pass); try a "
                 "black-box attack (square) with more queries, or BPDA / EOT through the non-differentiable part")


def check_black_vs_white(outcomes: dict, exit_k: int = max(KS), share: float = SQUARE_SHARE) -> list[Check]:
    """Per sample, on i2t rank, at R@1 and at R@``exit_k`` (the suite's exit rank): images a black-box attack
    moves to rank >= k while every white-box attack on the same images left them below k; more than ``share``
    of the images that were below k clean flags (AutoAttack's ``check_square_sr``: Square may lower robust
    accuracy by at most 0.2 % of the points; here of the images it could break, so no looser)."""
    out = []
    for scope, o in outcomes.items():
        white = [k for k, kind in o.kinds.items() if kind == "white-box"]
        if not white:
            continue
        for k in sorted({1, int(exit_k)}):
            intact = torch.stack([o.ranks[w] < k for w in white]).all(dim=0)
            correct = o.clean < k
            n = int(correct.sum())
            for key, kind in o.kinds.items():
                if kind != "black-box":
                    continue
                only = int(((o.ranks[key] >= k) & intact & correct).sum())
                good = only <= share * n
                out.append(_line(good, f"{key} vs white-box ({', '.join(white)}) per sample on i2t "
                                 f"rank at R@{k}: {only} of {n} clean rank<{k} images broken by {key} only "
                                 f"({_rel(good, '<=', '>')} {100 * share:g}%)"
                                 + ("" if scope == "full" else f" [{scope}]"),
                                 "suggests gradient masking: the gradients miss adversarial points a query search "
                                 "finds; try more white-box steps and restarts, the margin or targeted objective "
                                 "(apgd-margin, apgd-t), and report the per-sample worst (--attacks standard)"))
    return out


def check_fgsm_vs_iterative(fgsm_ranks: torch.Tensor, ref: str, ref_ranks: torch.Tensor, exit_k: int = max(KS),
                            where: str = "") -> list[Check]:
    """FGSM (one step of eps) must not reach a lower i2t recall than the iterative attack ``ref`` at R@1 or at
    R@``exit_k``: many small steps that do worse than one large one follow a gradient that misleads away from
    the clean image (masked gradients; Carlini et al. 2019, arXiv 1902.06705)."""
    lines = []
    for k in sorted({1, int(exit_k)}):
        f = 100 * float((fgsm_ranks < k).float().mean())
        r = 100 * float((ref_ranks < k).float().mean())
        good = f >= r - TOL
        lines.append(_line(good, f"FGSM vs {ref} i2t R@{k}{where}: {f:.1f} {_rel(good, '>=', '<')} {r:.1f} "
                           + _rel(good, "(one step not stronger than the iterative attack)",
                                  "(one step stronger than the iterative attack)"),
                           "suggests masked gradients: the iterative attack's small steps are misled where one "
                           "large step is not; try a random start, larger steps, the margin objective, square"))
    return lines


def check_zero_gradients(key: str, objective, starts: torch.Tensor) -> Check:
    """Every start point of attack ``key`` gets a non-zero, finite input gradient of its objective (AutoAttack's
    ``check_zero_gradients``, at the same points: after the random start)."""
    _, g = loss_and_grad(objective, starts)
    z = g.reshape(len(g), -1).abs().sum(1)
    zero, bad = int((z == 0).sum()), int((~torch.isfinite(z)).sum())
    return _line(zero == 0 and bad == 0, f"{key}: input gradients non-zero at {len(z) - zero} of {len(z)} start "
                 f"points of its objective" + (f", {bad} NOT finite" if bad else ""),
                 "gradient masking, a saturated loss or a non-differentiable model: try another objective "
                 "(margin, apgd-t), a lower logit scale for the attack, or a black-box attack (square)")


def check_output_range(scores: torch.Tensor, positives: torch.Tensor | None = None) -> Check:
    """The scores an objective is built from (B, T): finite; logits, not probabilities (every score in [0, 1]
    and each row summing to 1: AutoAttack's ``check_range_output``); not constant along a row; and not
    saturated: no image's best positive leads its best negative by more than -log(smallest normal) of the
    scores' dtype (87.3 in float32), where the softmax is one-hot and a cross-entropy gradient is zero."""
    s = scores.detach()
    dtype = s.dtype if s.is_floating_point() else torch.float32
    s = s.float()
    limit = -math.log(torch.finfo(dtype).tiny)
    if not bool(torch.isfinite(s).all()):
        return _line(False, f"output range: {int((~torch.isfinite(s)).any(1).sum())} of {len(s)} images have "
                     "non-finite scores", "a broken model or precision: try float32")
    probs = bool(s.min() > -1e-5) and bool(s.max() < 1 + 1e-5) and bool(((s.sum(1) - 1).abs() < 1e-5).all())
    flat = int((s.amax(1) == s.amin(1)).sum())
    if positives is not None and bool((~positives).any(1).all()):
        pos = s.masked_fill(~positives, float("-inf")).amax(1)
        gap = pos - s.masked_fill(positives, float("-inf")).amax(1)
    else:
        gap = s.topk(min(2, s.shape[1]), dim=1).values
        gap = gap[:, 0] - gap[:, -1]
    saturated = int((gap > limit).sum())
    return _line(not probs and not flat and not saturated,
                 f"output range on {len(s)} images: scores are logits (min {float(s.min()):.3g}, max "
                 f"{float(s.max()):.3g}{', rows sum to 1: probabilities' if probs else ''}), {flat} constant rows, "
                 f"{saturated} saturated (best positive ahead by > {limit:.1f}; largest lead {float(gap.max()):.1f})",
                 "probabilities or a saturated softmax give zero cross-entropy gradients: try the model's logits, a "
                 "lower logit scale for the attack, or scale-free objectives (margin, apgd-t) and square")


def check_robust_equals_clean(out: dict, outcomes: dict, chance: float) -> list[Check]:
    """A white-box attack at eps > 0 that moves no image's best positive down by a single rank, on a model
    whose clean r_mean is well above chance (chance + 10), is broken or blocked."""
    clean = out["clean"]["r_mean"]
    if out.get("eps", 0) <= 0 or clean < chance + 10 or "full" not in outcomes:
        return []
    o = outcomes["full"]
    lines = []
    for key, kind in o.kinds.items():
        if kind not in ("white-box", "suite") or "/" in key:   # a suite is judged by its worst case
            continue
        moved = int((o.ranks[key] != o.clean).sum())
        lines.append(_line(moved > 0, f"{key}: moved the i2t rank of {moved} of {len(o.clean)} images at eps "
                           f"{out.get('eps_str', '')} (clean r_mean {clean:.1f}, chance {chance:.1f})",
                           "robust == clean: suggests the attack never changed a ranking (gradients masked or "
                           "zero, or the attack not applied); try a random start, more steps, the margin "
                           "objective (apgd-margin), square"))
    return lines


def check_transfer(out: dict) -> list[Check]:
    """A transfer attack (crafted on a surrogate) must not beat the best white-box attack on i2t R@1."""
    atk = out["attacks"]
    white = [(k, e) for k, e in atk.items() if (s := _spec_of(k, e)) is not None and s.kind == "white-box"]
    lines = []
    for key, e in atk.items():
        s = _spec_of(key, e)
        if s is None or s.kind != "transfer" or not white:
            continue
        best_key, best = min(((k, w["metrics"]["i2t_r1"]) for k, w in white), key=lambda t: t[1])
        r = e["metrics"]["i2t_r1"]
        good = r >= best - 2.0
        lines.append(_line(good, f"{key} i2t R@1 {r:.1f} vs white-box {best_key} {best:.1f}: transfer "
                           f"{_rel(good, 'not stronger', 'stronger')} by > 2 points",
                           "suggests gradient masking on the target: a surrogate's gradients work better than "
                           "its own; try more steps, restarts, other objectives on the target"))
    return lines


def _fgsm_on_full(o: Outcomes | None, exit_k: int) -> list[Check]:
    """Each one-step attack (declaring ``versus_iterative``: FGSM) against each iterative white-box attack run
    beside it on the full set."""
    if o is None:
        return []
    ones = [k for k in o.ranks if "versus_iterative" in _checks_of(k)]
    refs = [k for k in o.ranks if "convergence" in _checks_of(k)]
    return [c for f in ones for k in refs for c in check_fgsm_vs_iterative(o.ranks[f], k, o.ranks[k], exit_k)]


def verdict(checks: list[Check]) -> str:
    """The line a report leads with: ``no sign of gradient masking (N checks)`` or the flags."""
    flags = [c for c in checks if not c.passed]
    if not flags:
        return f"no sign of gradient masking ({len(checks)} checks)"
    return f"{len(flags)} of {len(checks)} checks flagged: " + "; ".join(c.message for c in flags)


def run_checks(threat: ThreatModel, out: dict, *, ctx_checks: dict, probe: Probe | None,
               outcomes: dict | None = None, chance: float | None = None) -> list[Check]:
    """All checks for one ``evaluate_robust`` result ``out``; the expensive ones through ``probe``;
    ``outcomes``: per set of images ("full", "subset") the per-sample ``Outcomes``; ``chance``: chance r_mean."""
    lines = []
    for name, entry in out["attacks"].items():
        spec = _spec_of(name, entry)
        kind = None if spec is None else ("image" if spec.perturbs_images and spec.kind != "joint" else spec.kind)
        lines.append(check_robust_le_clean(name, entry, kind))
        if spec is not None and "bounds" in spec.checks:
            lines += check_bounds(name, ctx_checks.get(name, {}), threat)
    if "ensemble" in out:
        lines.append(check_robust_le_clean("ensemble", out["ensemble"], "image"))
    for name in out["attacks"]:
        if "versus_white_box" in _checks_of(name):
            lines += check_square(out, name)
    exit_k = int(out.get("suite_exit_k") or max(KS))
    if outcomes:
        lines += check_black_vs_white(outcomes, exit_k)
        lines += _fgsm_on_full(outcomes.get("full"), exit_k)
    if chance is not None and outcomes:
        lines += check_robust_equals_clean(out, outcomes, chance)
    lines += check_transfer(out)
    if probe is None:
        return lines
    if probe.starts:
        lines += [check_zero_gradients(key, obj, x) for key, (obj, x) in probe.starts.items()]
    else:
        lines.append(check_gradients(probe.objective, probe.images))
    if probe.scores is not None:
        lines.append(check_output_range(probe.scores, probe.positives))
    lines.append(check_first_order(probe.objective, probe.images, threat.norm))
    white = [k for k, (name, _) in probe.runs.items() if "convergence" in _checks_of(name)]
    if not white:
        return lines
    base_key = max(white, key=lambda k: registry.get(probe.runs[k][0]).reference)
    th = probe.runs[base_key][1]
    sub = f"on {probe.n_images} images"
    base_metrics, base_ranks = probe.rerun(base_key, th, ranks=True)
    base = base_metrics["r_mean"]
    for one in (s.name for s in registry.specs() if "versus_iterative" in s.checks):
        lines += check_fgsm_vs_iterative(probe.rerun(base_key, th, attack=one, ranks=True)[1], base_key,
                                         base_ranks, exit_k, f" {sub}")
    for label, changed in (("steps", th.replace(steps=th.steps * 2)),
                           ("restarts", th.replace(restarts=th.restarts * 2))):
        r = probe.rerun(base_key, changed)["r_mean"]
        good = abs(r - base) < 1.0
        lines.append(_line(good, f"{base_key} {label} x2 {sub}: robust r_mean {base:.1f} -> {r:.1f} "
                           f"(|change| {abs(r - base):.2f} {_rel(good, '<', '>=')} 1)",
                           f"not converged: report the attack with {label} x2 or more"))
    chance_small = probe.chance if probe.chance is not None else chance_r_mean(probe.txt2img, probe.n_images)
    big = th.replace(norm="linf", eps=0.5, step_size=None, restarts=1, random_start=False)
    r = probe.rerun(base_key, big)["r_mean"]
    good = r <= chance_small + 5.0
    lines.append(_line(good, f"{base_key} linf eps=0.5 no-random-start {sub}: robust r_mean "
                       f"{r:.1f} {_rel(good, 'at or below', 'above')} chance {chance_small:.1f} + 5",
                       "the attack cannot break the model even unbounded: suggests gradient masking or a broken "
                       "attack; try square, more steps, another objective"))
    return lines


__all__ = ["SQUARE_SHARE", "Check", "Outcomes", "Probe", "chance_r_mean", "check_black_vs_white",
           "check_fgsm_vs_iterative", "check_first_order", "check_gradients", "check_output_range",
           "check_zero_gradients", "check_monotone", "check_mode_restored", "check_robust_equals_clean",
           "check_robust_le_clean", "check_square", "check_transfer", "run_checks", "verdict",
           "white_box_reference"]
