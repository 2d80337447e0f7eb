"""The field's sanity checks of a robustness evaluation, run automatically by ``evaluate_robust``.

Each check returns one line, ``PASS <what was measured>`` or ``WARN <what was measured> (<what it suggests>)``,
written into the report beside the numbers (peers.md lists why each exists):
- robust <= clean for every attack (an attack that helps is a broken attack or a broken metric);
- robust r_mean non-increasing over an eps sweep (``check_monotone``, run by the CLI over its sweep);
- near chance at linf eps = 0.5 (an unbounded-ish attack must destroy retrieval; chance r_mean depends on the
  gallery size and captions per image, ``chance_r_mean``);
- doubling the steps, or the restarts, of PGD changes robust r_mean by < 1 point (else "not converged");
- Square is not better than the best white-box attack by > 2 points (else "possible gradient masking");
- the objective's input gradients are non-zero;
- attack inputs and outputs stay in [0, 1] and in the eps ball;
- the model is in eval mode during the attack and its mode is restored after.
The expensive checks (chance, convergence) run on a deterministic subset of ``limit`` images.
"""
from __future__ import annotations

import math

import torch

from advlora.attacks import ThreatModel, format_eps

TOL = 1e-6


def _line(ok: bool, msg: str, hint: str = "") -> str:
    return f"PASS {msg}" if ok else f"WARN {msg}" + (f" ({hint})" if hint else "")


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


def check_robust_le_clean(name: str, entry: dict) -> str:
    c, r = entry["clean"]["r_mean"], entry["metrics"]["r_mean"]
    worse = [k for k in entry["metrics"] if entry["metrics"][k] > entry["clean"][k] + TOL]
    return _line(not worse, f"{name}: robust <= clean (r_mean {r:.1f} <= {c:.1f}"
                 + (f"; higher: {', '.join(worse)}" if worse else "") + ")", "the attack improved retrieval")


def check_bounds(name: str, checks: dict, threat: ThreatModel) -> list[str]:
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


def check_square(out: dict) -> list[str]:
    """Square (no gradients) must not beat the best white-box attack by > 2 r_mean points on the same images."""
    atk = out["attacks"]
    if "square" not in atk:
        return []
    sq = atk["square"]
    if "subset" in sq:
        if "whitebox_on_subset" not in sq:
            return []
        best_name = sq["whitebox_on_subset"]["attack"]
        best = sq["whitebox_on_subset"]["metrics"]["r_mean"]
        where = f" (both on the Square subset: {sq['subset']})"
    else:
        wb = [n for n in ("fgsm", "pgd", "apgd", "apgd-margin") if n in atk]
        if not wb:
            return []
        best_name = min(wb, key=lambda n: atk[n]["metrics"]["r_mean"])
        best, where = atk[best_name]["metrics"]["r_mean"], ""
    r = sq["metrics"]["r_mean"]
    return [_line(r >= best - 2.0, f"Square r_mean {r:.1f} vs white-box {best_name} {best:.1f}: Square not better "
                  f"by > 2 points{where}", "possible gradient masking")]


def check_monotone(sweep: list[tuple[float, float]], name: str = "") -> str:
    """``sweep``: (eps, robust r_mean) pairs; PASS when r_mean never increases with eps (0.05 point tolerance)."""
    pts = sorted(sweep)
    bad = [(a, b) for a, b in zip(pts, pts[1:]) if b[1] > a[1] + 0.05]
    desc = ", ".join(f"{format_eps(e)}: {r:.1f}" for e, r in pts)
    return _line(not bad, f"{name + ': ' if name else ''}robust r_mean non-increasing over eps ({desc})",
                 "the attack is not converged or gradients are masked")


def check_gradients(model, objective, images: torch.Tensor) -> str:
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(objective(x).sum(), x)
    nz = (g.reshape(len(g), -1).abs().amax(1) > 0).float().mean().item() * 100
    finite = bool(torch.isfinite(g).all())
    return _line(nz == 100 and finite, f"input gradients non-zero for {nz:.0f}% of {len(g)} images"
                 f"{'' if finite else ', NOT finite'}", "gradient masking or a non-differentiable model")


def check_mode_restored(model, was_training: bool) -> str:
    return _line(model.training == was_training, f"model mode restored after the attack "
                 f"(training={model.training}, before={was_training})", "the attack changed the model's mode")


def run_checks(model, dataset, threat: ThreatModel, out: dict, *, ctx_checks: dict, objective: str,
               gallery: str, batch_size: int, limit: int, rerank_k, was_training: bool) -> list[str]:
    """All checks for one ``evaluate_robust`` result; the expensive ones on ``limit`` images."""
    from advlora.evaluation.robust import _context, _objective, evaluate_robust, limit_indices

    lines = []
    for name, entry in out["attacks"].items():
        lines.append(check_robust_le_clean(name, entry))
        lines += check_bounds(name, ctx_checks.get(name, {}), threat)
    if "ensemble" in out:
        lines.append(check_robust_le_clean("ensemble", out["ensemble"]))
    lines += check_square(out)
    idx = limit_indices(len(dataset), limit)
    small = dataset if idx is None else dataset.subset(idx)
    ctx = _context(model, small, rerank_k)
    n = min(len(small), batch_size)
    sel = torch.arange(n)
    x = ctx.images[sel].to(model.device)
    lines.append(check_gradients(model, _objective(objective if objective != "embedding" else "contrastive",
                                                   ctx, sel, x, gallery), x))
    white = [a for a in ("pgd", "apgd") if a in out["attacks"]]
    if not white:
        return lines
    base_attack = white[0]
    sub = f"on {len(small)} images"
    kw = dict(rerank_k=rerank_k, batch_size=batch_size, objective=objective, gallery=gallery, sanity=False)
    run = lambda th: evaluate_robust(model, small, [base_attack], th, **kw)["attacks"][base_attack]  # noqa: E731
    base = run(threat)["metrics"]["r_mean"]
    for label, th in (("steps", threat.replace(steps=threat.steps * 2)),
                      ("restarts", threat.replace(restarts=threat.restarts * 2))):
        r = run(th)["metrics"]["r_mean"]
        lines.append(_line(abs(r - base) < 1.0, f"{base_attack} {label} x2 {sub}: robust r_mean {base:.1f} -> {r:.1f} "
                           f"(|change| {abs(r - base):.2f} < 1)", "not converged"))
    chance = chance_r_mean(small.txt2img, len(small))
    big = ThreatModel(norm="linf", eps=0.5, steps=threat.steps, restarts=1, random_start=threat.random_start,
                      seed=threat.seed)
    r = run(big)["metrics"]["r_mean"]
    lines.append(_line(r <= chance + 5.0, f"{base_attack} linf eps=0.5 {sub}: robust r_mean {r:.1f} at or below "
                       f"chance {chance:.1f} + 5", "the attack cannot break the model: gradient masking?"))
    return lines


__all__ = ["chance_r_mean", "check_gradients", "check_monotone", "check_mode_restored", "check_robust_le_clean",
           "check_square", "run_checks"]
