"""The threat model: norm, radius and attack budget, always in pixel space [0, 1].

Robustness numbers are only comparable when the threat model is written beside them (see
``../shared/research/peers.md``: eps in normalised space, step = eps with no random start, one perturbation per
batch). ``ThreatModel.describe()`` is that one line, e.g. ``linf eps=4/255 PGD steps=10 step=1/255 restarts=1
random-start``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from advlora.attacks import registry
from advlora.errors import AdvloraError, choices_error

NORMS = ("linf", "l2")
#: every field a threat-model line can name, in its order
FIELDS = ("norm", "eps", "steps", "step_size", "restarts", "random_start")


def parse_eps(value: float | int | str, what: str = "eps") -> float:
    """``"4/255"``, ``"0.03"``, ``0.03`` or ``4`` (int, read as a float) -> float >= 0; anything else is an error."""
    if isinstance(value, bool):
        raise AdvloraError(f"malformed {what} {value!r} (use a number such as 0.0157 or a fraction such as 4/255)")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                out = float(num) / float(den)
            else:
                out = float(text)
        except (ValueError, ZeroDivisionError):
            raise AdvloraError(f"malformed {what} {value!r} (use a number such as 0.0157 or a fraction such as "
                               f"4/255)") from None
    else:
        raise AdvloraError(f"malformed {what} {value!r} (use a number such as 0.0157 or a fraction such as 4/255)")
    if not math.isfinite(out):
        raise AdvloraError(f"malformed {what} {value!r} (not a finite number)")
    if out < 0:
        raise AdvloraError(f"{what} must be >= 0, got {value!r}")
    return out


def parse_eps_list(text: str | list) -> list[float]:
    """``"1/255,2/255,4/255"`` (or a list) -> floats, each validated by ``parse_eps``."""
    items = text if isinstance(text, (list, tuple)) else [t for t in str(text).split(",") if t.strip()]
    if not items:
        raise AdvloraError("eps list is empty")
    return [parse_eps(t) for t in items]


def format_eps(eps: float, norm: str = "linf") -> str:
    """``4/255`` when eps is a multiple of 1/255; a short decimal (``0.5``) when it is one; else ``0.5/255`` for
    multiples of 1/(255*16); else four significant digits. Under ``l2``, whose radii are sums over all pixels
    (0.5, 1, 3), a short decimal comes first (``1``, not ``255/255``)."""
    if eps == 0:
        return "0"
    if norm == "l2" and abs(float(f"{eps:.4g}") - eps) < 1e-12:
        return f"{eps:.4g}"
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    short = f"{eps:.4g}"
    if abs(float(short) - eps) < 1e-12:
        return short
    if abs(k * 16 - round(k * 16)) < 1e-6:
        return f"{round(k * 16) / 16:g}/255"
    return short


@dataclass
class ThreatModel:
    """An attacker's budget in pixel space [0, 1].

    Attributes:
        norm: "linf" or "l2".
        eps: radius of the ball; "4/255" or a float (stored as a float after validation).
        step_size: step of PGD-style attacks; None -> 2.5 * eps / steps (Madry et al. 2018, arXiv 1706.06083).
        steps: iterations (>= 1); FGSM uses one step regardless.
        restarts: independent random restarts; the per-sample worst case is kept (>= 1).
        random_start: start from a uniform point in the ball instead of the clean image.
        seed: seed of the attack's ``torch.Generator`` (random starts, Square's proposals, text edits).
    """

    norm: str = "linf"
    eps: float | str = 4 / 255
    step_size: float | str | None = None
    steps: int = 10
    restarts: int = 1
    random_start: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise choices_error("norm", self.norm, NORMS)
        self.eps = parse_eps(self.eps)
        if self.norm == "linf" and self.eps >= 1:
            raise AdvloraError(f"eps {self.eps:g} is an Linf radius of 1 or more in pixel space [0, 1], "
                               f"which allows any image; for {self.eps:g} of 255 intensity levels write "
                               f"{self.eps:g}/255")
        if self.step_size is not None:
            self.step_size = parse_eps(self.step_size, "step size")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise AdvloraError(f"steps must be an integer >= 1, got {self.steps!r}")
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, int) or self.restarts < 1:
            raise AdvloraError(f"restarts must be an integer >= 1, got {self.restarts!r}")
        self.random_start = bool(self.random_start)
        self.seed = int(self.seed)

    def check_image_size(self, size: int | tuple[int, int], channels: int = 3) -> None:
        """Refuse an L2 radius beyond the diameter of the image cube, ``sqrt(channels * H * W)``: such a ball holds
        every image of that size (an Linf radius of 1 or more is refused when the threat model is made)."""
        h, w = (size, size) if isinstance(size, int) else size
        diameter = math.sqrt(channels * h * w)
        if self.norm == "l2" and self.eps > diameter:
            raise AdvloraError(f"eps {float(self.eps):g} is an L2 radius beyond the diameter of a "
                               f"{channels}x{h}x{w} image in pixel space [0, 1] ({diameter:.4g}), which allows any "
                               f"image; L2 radii are usually below 1 (e.g. 0.5), or {float(self.eps):g}/255 for "
                               f"{float(self.eps):g} intensity levels")

    @property
    def eps_text(self) -> str:
        """The radius as lines, keys and file names write it (``format_eps`` under this norm)."""
        return format_eps(float(self.eps), self.norm)

    @property
    def step(self) -> float:
        """The step size actually used: ``step_size`` or 2.5 * eps / steps."""
        return float(self.step_size) if self.step_size is not None else 2.5 * float(self.eps) / self.steps

    def replace(self, **changes) -> ThreatModel:
        return dataclasses.replace(self, **changes)

    def generator(self, device: str = "cpu") -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed)

    def line(self, label: str, uses: tuple[str, ...] = FIELDS, **extra) -> str:
        """``{norm} eps={eps} {label}`` then the fields of ``uses`` an attack reads (steps, step, restarts,
        random start) and ``extra`` (``key=value``, None values left out)."""
        parts = [f"{self.norm} eps={self.eps_text}", label]
        if "steps" in uses:
            parts.append(f"steps={self.steps}")
        if "step_size" in uses:
            parts.append(f"step={format_eps(self.step, self.norm)}")
        if "restarts" in uses:
            parts.append(f"restarts={self.restarts}")
        if "random_start" in uses:
            parts.append("random-start" if self.random_start else "no-random-start")
        parts += [f"{k}={v}" for k, v in extra.items() if v is not None]
        return " ".join(parts)

    def describe(self, attack: str = "PGD", **extra) -> str:
        """One line naming everything that determines the number beside it.

        ``describe("PGD")`` -> ``linf eps=4/255 PGD steps=10 step=1/255 restarts=1 random-start``. A registered
        attack name (any case) describes itself as its declaration says (``advlora.attacks.registry``); any other
        ``attack`` is a display name followed by every field.
        """
        spec = registry.find(attack.lower())
        if spec is None:
            return self.line(attack, FIELDS, **extra)
        context = {k: extra.pop(k) for k in list(extra) if k in registry.LINE_KEYS}
        return " ".join([spec.line(self, None, context), *(f"{k}={v}" for k, v in extra.items() if v is not None)])
