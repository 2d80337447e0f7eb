"""Training objectives: what a training step's attack maximises and what its update minimises, declared once.

An objective combines the image objective of the training attack (a per-image function of the perturbed images
that the attack of the run's ``attack`` section maximises, with that section's budget) with the loss of the
update. Each one declares itself in its own module of this package with ``register(Objective(...))``; importing
the package imports every module of it, so a new objective is one new file (``advlora train --objective NAME``,
``train.objective``; ``tests/training/test_objectives.py`` declares a throw-away one and trains a step with it).

Declared: ``tecoa`` (the default: on a classification set TeCoA's cross-entropy over the fixed class-prompt
embeddings, on captions the symmetric contrastive loss against the batch captions; on adversarial images, the
attack maximising each image's image-to-text cross-entropy), ``trades``, ``mix``, ``fgsm-rs``
(``tecoa`` under FGSM with random start: fast adversarial training), ``fare`` (the squared embedding
distance to the frozen original model, trained from images alone), ``fap``, ``pmg-aft`` and ``apt`` /
``apt-constant`` (APT's adversarial cross-entropy, the attack against the current or a constant prompt).

An objective's two functions receive plain inputs (``AttackInputs``, ``LossInputs``) and return tensors;
``advlora.training.step`` owns the model calls shared by all of them, the DDP gathering and the padding rows.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from advlora.declarations import Declarations, import_all
from advlora.errors import AdvloraError

#: the objective of a run that names none
DEFAULT = "tecoa"
#: what the training attack's text may be (``Objective.attack_text``)
ATTACK_TEXTS = ("current", "constant")
#: the values of the former ``attack.loss`` field and the objective each one is
LEGACY_LOSSES = {"adv": "tecoa", "trades": "trades", "mix": "mix"}


@dataclass
class AttackInputs:
    """What the image objective of the training attack is built from (the model is in eval mode).

    Attributes:
        model: the model under training (a ``VLModel``).
        clean: this rank's clean images (b, 3, H, W) in [0, 1].
        text: the gathered caption features (B, D), unit norm, without gradient; None for an objective without
            captions.
        positives: (b, B) bool, this rank's rows of the batch positives.
        scale: the model's logit scale, detached.
        reference: the frozen original model's image features of ``clean`` (b, D), for an objective that
            declares ``reference``; else None.
        config: the run's ``AttackConfig`` (``beta``, ``clean_weight``).
        contrastive: ``contrastive(image_features) -> (b,)``: the attack loss of each image against ``text`` and
            its ``positives`` (None without captions): ``attack.attack_loss`` (``advlora.attacks.objectives.LOSSES``)
            for an objective that declares ``attack_loss``, else the image-to-text cross-entropy.
    """

    model: Any
    clean: torch.Tensor
    text: torch.Tensor | None
    positives: torch.Tensor
    scale: torch.Tensor
    reference: torch.Tensor | None
    config: Any
    contrastive: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class LossInputs:
    """What the loss of the update is computed from.

    Attributes:
        adv: this rank's image features of the training images (b, D), with gradient (the adversarial images;
            the clean ones under clean training).
        clean: this rank's image features of the clean images (b, D), when the objective declares
            ``clean_features`` and the run trains on adversarial images; else None.
        text: the gathered caption features of the real rows (B', D), or None without captions.
        scale: the model's logit scale.
        itc: ``itc(features) -> loss``: the model's contrastive loss of this rank's image features against the
            gathered captions and positives, gathered and restricted to the real rows (one scalar).
        mine: (b,) bool, this rank's real rows; ``count``: the global batch's real rows.
        reference: the frozen original model's image features (b, D) of the clean images, or of the adversarial
            ones for an objective whose ``reference_images`` is ``adv``; or None.
        config: the run's ``AttackConfig``.
    """

    adv: torch.Tensor
    clean: torch.Tensor | None
    text: torch.Tensor | None
    scale: torch.Tensor
    itc: Callable[[torch.Tensor], torch.Tensor]
    mine: torch.Tensor
    count: int
    reference: torch.Tensor | None
    config: Any
    padded: bool = False

    def mean(self, per_image: torch.Tensor) -> torch.Tensor:
        """This rank's share of the global batch mean of a per-image term: the sum over its real rows divided
        by the global count (summed over the ranks, the mean)."""
        return (per_image if not self.padded else per_image * self.mine).sum() / self.count


@dataclass
class Terms:
    """An objective's loss: ``batch`` (a loss of the whole gathered batch, the same value on every rank),
    ``per_image`` (this rank's share of a mean over images, ``LossInputs.mean``; None: none) and the named
    parts the run logs (``itc``, ``kl``, ``fare``)."""

    batch: torch.Tensor
    per_image: torch.Tensor | None = None
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    """One training objective's declaration.

    Attributes:
        name: the name users type (``--objective fare``).
        attack_objective: ``(AttackInputs) -> (x -> (b,) per-image loss)``: what the training attack maximises.
        loss: ``(LossInputs) -> Terms``: what the update minimises.
        doc: one line on what it is and where it comes from.
        captions: the objective reads captions (False: trains from images alone; no text is encoded).
        clean_features: the loss also reads the current model's features of the clean images.
        reference: the objective reads the frozen original model's image features (``advlora.training.reference``).
        reference_images: which images those features are of: ``clean`` (computed before the attack, which reads
            them too: FARE) or ``adv`` (computed after it, for the loss only: PMG-AFT).
        normalize: image features are unit norm (False: the raw projected embeddings).
        stationary: the attack objective is 0 with zero gradient at the clean image (its random start then
            adds TRADES' small noise even when the threat has none).
        attack_loss: the attack maximises ``AttackInputs.contrastive``, so ``attack.attack_loss`` chooses its loss
            (cross-entropy, CW margin, DLR); a config choosing another than cross-entropy for an objective
            without it is refused.
        attack: ``attack`` section fields the objective fixes (``fgsm-rs``: the attack's name); a config that
            sets another value is refused.
        published: the published training settings, for the documentation and ``describe``.
        attack_text: the text the training attack scores the images against: ``current`` (the model's text
            features as they are at the step: the batch captions, or the class prompts with the learned prompt of
            the moment, "on the fly") or ``constant`` (the text tower without its learned prompt: on a
            classification set the class embeddings in the set's templates, encoded once; APT's constant prompt).
    """

    name: str
    attack_objective: Callable[[AttackInputs], Callable[[torch.Tensor], torch.Tensor]]
    loss: Callable[[LossInputs], Terms]
    doc: str = ""
    captions: bool = True
    clean_features: bool = False
    reference: bool = False
    reference_images: str = "clean"
    normalize: bool = True
    stationary: bool = False
    attack_loss: bool = False
    attack: dict = field(default_factory=dict)
    published: str = ""
    attack_text: str = "current"

    def __post_init__(self) -> None:
        if not self.name or not callable(self.attack_objective) or not callable(self.loss):
            raise AdvloraError(f"objective {self.name!r}: a name, a callable attack objective and a callable loss")
        if self.attack_text not in ATTACK_TEXTS:
            raise AdvloraError(f"objective {self.name!r}: attack_text is {' or '.join(ATTACK_TEXTS)}, "
                               f"not {self.attack_text!r}")
        if self.reference_images not in ("clean", "adv"):
            raise AdvloraError(f"objective {self.name!r}: reference_images is clean or adv, "
                               f"not {self.reference_images!r}")


#: every declared training objective (``Declarations``: ``register`` at import, ``registered`` for a
#: throw-away one, ``get``, ``names``, ``unregister``)
DECLARED: Declarations[Objective] = Declarations("training objective")
register, unregister, registered, get, names = (DECLARED.register, DECLARED.unregister, DECLARED.registered,
                                                DECLARED.get, DECLARED.names)

import_all(__name__, __path__)

__all__ = ["DEFAULT", "LEGACY_LOSSES", "AttackInputs", "LossInputs", "Objective", "Terms", "get", "names",
           "register", "registered", "unregister"]
