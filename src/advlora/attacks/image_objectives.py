"""The image objectives an evaluation's attacks can maximise, each declared once (``ObjectiveSpec``).

An ``ObjectiveSpec`` names an objective (``--objective margin``), says whether it needs a model with an ITM head,
and builds it from one batch's ``ObjectiveInputs`` (the model, the clean images, the caption gallery and which
captions are each image's, the ranks aimed at, ...). ``build(name, inputs)`` is how the evaluation (its runners,
probes and sanity checks) gets an objective; a new objective is one ``register(ObjectiveSpec(...))``, in any
module imported before it is named (``registered`` for a ``with`` block: a throw-away one in a test). The
builders themselves live in ``advlora.attacks.objectives``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from advlora.attacks import objectives as O
from advlora.declarations import Declarations
from advlora.errors import choices_error


@dataclass(frozen=True)
class ObjectiveInputs:
    """What an objective of one batch may be built from.

    Attributes:
        model: the model attacked (a ``VLModel``).
        images: (B, ...) clean pixels of the batch, on the model's device.
        text_features: (N, D) unit caption embeddings of the whole gallery.
        positives: bool (B, N): caption j describes image b.
        captions: the N captions of the gallery.
        gallery: ``full`` (the objective against every caption) or ``batch`` (the captions of the batch only).
        clean_features: (B, D) the clean images' features when already measured (None: not known).
        ranks: the increasing ranks a margin objective aims at (``objectives.staged``).
        n_targets: targets of a targeted family.
        rerank_k: the ITM re-rank depth (0 / None: ITC only).
        logit_scale: the cross-entropy objective's fixed logit scale (a protocol's, RobustVLM's 100; None: the
            model's own). Margin and DLR are scale-invariant.
    """

    model: object
    images: torch.Tensor
    text_features: torch.Tensor
    positives: torch.Tensor
    captions: Sequence[str]
    gallery: str = "full"
    clean_features: torch.Tensor | None = None
    ranks: tuple[int, ...] = (1,)
    n_targets: int = 9
    rerank_k: int | None = None
    logit_scale: float | None = None

    def columns(self) -> torch.Tensor:
        """The gallery's caption indices the objective scores against: all, or the batch's own."""
        if self.gallery == "batch":
            return self.positives.any(dim=0).nonzero().squeeze(1)
        return torch.arange(self.positives.shape[1])

    def scored(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(text features, positives) of the gallery scored against (``columns``)."""
        if self.gallery != "batch":
            return self.text_features, self.positives
        cols = self.columns()
        return self.text_features[cols.to(self.text_features.device)], self.positives[:, cols]


@dataclass(frozen=True)
class ObjectiveSpec:
    """One image objective's declaration: ``name``, ``build(inputs) -> objective`` (an ``AttackObjective``, or a
    ``TargetFamily`` when ``family``: only an attack that declares it runs it, ``apgd-t``), ``needs_itm`` (BLIP's
    ITM head), ``doc`` (one line)."""

    name: str
    build: Callable[[ObjectiveInputs], object]
    needs_itm: bool = False
    family: bool = False
    doc: str = ""


#: every declared image objective
DECLARED: Declarations[ObjectiveSpec] = Declarations("objective")
register, unregister, registered, get, find, names = (DECLARED.register, DECLARED.unregister, DECLARED.registered,
                                                      DECLARED.get, DECLARED.find, DECLARED.names)


def build(name: str, inputs: ObjectiveInputs):
    """The objective ``name`` of ``inputs``' batch (an unknown name: one error line listing the declared ones)."""
    return get(name).build(inputs)


def choices() -> tuple[str, ...]:
    """The objectives a user can name for an evaluation's attacks (every declared one but the families)."""
    return tuple(n for n, s in DECLARED.items.items() if not s.family)


def check_objective(name: str) -> str:
    """``name`` if it is one of ``choices``, else one error line listing them."""
    if name not in choices():
        raise choices_error("objective", name, choices())
    return name


def _contrastive(a: ObjectiveInputs):
    tf, pos = a.scored()
    return O.contrastive(a.model, tf, pos, logit_scale=a.logit_scale, clean_features=a.clean_features)


def _margin(a: ObjectiveInputs):
    tf, pos = a.scored()
    return O.margin(a.model, tf, pos, clean_features=a.clean_features, k=a.ranks)


def _dlr(a: ObjectiveInputs):
    tf, pos = a.scored()
    return O.dlr(a.model, tf, pos, clean_features=a.clean_features, k=a.ranks)


def _targeted(a: ObjectiveInputs):
    tf, pos = a.scored()
    return O.TargetedDLR(a.model, tf, pos, a.images, n_targets=a.n_targets, k=a.ranks)


def _embedding(a: ObjectiveInputs):
    with torch.no_grad():
        return O.embedding(a.model, a.model.encode_image(a.images, normalize=False))


def _itm(a: ObjectiveInputs):
    return O.itm(a.model, [[a.captions[j] for j in p.nonzero().squeeze(1).tolist()] for p in a.positives])


def _rerank(a: ObjectiveInputs):
    tf, pos = a.scored()
    return O.rerank(a.model, a.images, tf, pos, [a.captions[j] for j in a.columns().tolist()], k=a.rerank_k or 16)


for _spec in (
    ObjectiveSpec("contrastive", _contrastive, doc="multi-positive cross-entropy against the caption gallery"),
    ObjectiveSpec("itc", _contrastive, doc="the contrastive objective under BLIP's name"),
    ObjectiveSpec("margin", _margin, doc="k-th best negative minus best positive cosine (CW margin)"),
    ObjectiveSpec("dlr", _dlr, doc="AutoAttack's untargeted DLR on the gallery"),
    ObjectiveSpec("embedding", _embedding, doc="squared distance to the clean embedding (FARE)"),
    ObjectiveSpec("itm", _itm, needs_itm=True, doc="negative ITM match logit with the image's own captions"),
    ObjectiveSpec("rerank", _rerank, needs_itm=True, doc="cross-entropy through BLIP's ITC + ITM re-ranking"),
    ObjectiveSpec("dlr-targeted", _targeted, family=True,
                  doc="APGD-T's targeted DLR family (one objective per target)"),
):
    register(_spec)


__all__ = ["DECLARED", "ObjectiveInputs", "ObjectiveSpec", "build", "check_objective", "choices", "find", "get",
           "names", "register", "registered", "unregister"]
