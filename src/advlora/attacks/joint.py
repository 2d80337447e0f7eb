"""A joint image+text attack in the style of Co-Attack (Zhang et al. 2022, "Towards Adversarial Attack on
Vision-Language Pre-training Models", arXiv 2206.09391), for embedding (dual-encoder) retrieval.

Order as in Co-Attack: first the text is perturbed (character-level, ``text.text_attack``; Co-Attack uses
BERT-Attack word substitutions), pushing each caption's embedding away from its clean image; then the image
is perturbed *guided by the adversarial text*: the image objective is
``(1 - cos(f(x'), f(x))) + lam * (1 - cos(f(x'), t'))`` with t' the mean unit embedding of the image's
adversarial captions, maximised by PGD (linf/l2, pixel space [0, 1]), so both perturbations push the pair apart
collaboratively instead of cancelling. Images (B, ...) in [0, 1]; one perturbation per image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advlora.attacks._utils import attack_mode
from advlora.attacks.pgd import pgd
from advlora.attacks.registry import AttackSpec, register
from advlora.attacks.text import text_attack
from advlora.attacks.threat import ThreatModel


@dataclass(frozen=True)
class TextSide:
    """Co-Attack's text side and its weight in the image objective: ``budget`` character edits per caption among
    ``candidates`` proposals each (``text.text_attack``), and ``lam``, the weight of the image's distance to its
    adversarial captions beside its distance to its clean embedding. ``text_attack`` validates the budget and
    candidates (one ``AdvloraError`` line each)."""

    budget: int = 3
    candidates: int = 16
    lam: float = 1.0


@dataclass(frozen=True)
class Pairs:
    """What the joint attack perturbs beside the images: the ``model`` attacked, the batch's ``captions`` and
    ``owner[j]``, the batch row of caption j (the "objective" its registered ``run`` takes)."""

    model: object
    captions: list
    owner: torch.Tensor


def co_attack(model, images: torch.Tensor, captions: list[str], owner: torch.Tensor, threat: ThreatModel, *,
              text: TextSide = TextSide(), generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, list[str]]:
    """Returns (adversarial images (B, ...), adversarial captions); ``owner[j]`` is the batch row of caption j.
    ``threat``: the image side's PGD budget, read whole (``pgd.pgd``); ``text``: the text side (``TextSide``)."""
    owner = torch.as_tensor(owner, dtype=torch.long)
    with attack_mode(model):
        with torch.no_grad():
            clean_img = model.encode_image(images)
        owner_d = owner.to(clean_img.device)

        def text_objective(texts: list, rows: torch.Tensor) -> torch.Tensor:
            t = model.encode_text(list(texts))
            return 1 - (t * clean_img[owner_d[torch.as_tensor(rows, device=owner_d.device)]]).sum(-1)

        adv_caps = text_attack(text_objective, captions, budget=text.budget, candidates=text.candidates,
                               generator=generator)
        with torch.no_grad():
            t_adv = model.encode_text(adv_caps)
            guide = torch.zeros_like(clean_img).index_add(0, owner_d, t_adv)
            guide = F.normalize(guide, dim=-1)

        def image_objective(x: torch.Tensor) -> torch.Tensor:
            f = model.encode_image(x)
            return (1 - (f * clean_img).sum(-1)) + text.lam * (1 - (f * guide).sum(-1))

        adv = pgd(image_objective, images, threat, generator=generator)
    return adv, adv_caps


_USES = ("norm", "eps", "steps", "step_size", "restarts", "random_start", "seed")


def _run(pairs: Pairs, images: torch.Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None,
         text_budget: int = 3) -> tuple[torch.Tensor, list[str]]:
    return co_attack(pairs.model, images, pairs.captions, pairs.owner, threat, text=TextSide(budget=text_budget),
                     generator=generator)


def _line(threat, options: dict, context: dict) -> str:
    return threat.line("Co-Attack(PGD)", _USES, text_edits=options["text_budget"])


SPEC = register(AttackSpec("joint", "joint", _run, uses=_USES, label="Co-Attack", options={"text_budget": 3},
                           describe=_line))
