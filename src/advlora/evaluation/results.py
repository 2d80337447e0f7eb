"""The typed results of ``evaluate_robust`` and the text written beside them: one attack's row
(``AttackResult``), the threat-model line (``describe``), the precision tag, and the evaluation protocol
(``PROTOCOL``, recorded in every result under "protocol").
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from advlora.attacks import registry
from advlora.errors import AdvloraError

GALLERIES = ("full", "batch")
#: images encoded per forward pass when features are computed (clean and adversarial alike)
FEATURE_BATCH = 128
#: images per batch of BLIP's ITM re-ranking (their states, and the caption pairs scored from them)
ITM_BATCH = 64
#: the recall cut-offs reported (R@1, R@5, R@10): an image ranked at or beyond the largest is a miss for all
KS = (1, 5, 10)

#: how ``evaluate_robust`` runs and scores attacks; written into every result under "protocol"
PROTOCOL = """\
- image attacks: each image is perturbed ONCE, against its own captions, with the objective computed against
  the full clean caption gallery (``gallery="full"``, default) or only the captions of its batch
  (``gallery="batch"``, cheaper, weaker). Image-to-text: adversarial images query the clean caption gallery;
  text-to-image: clean captions query the gallery of adversarial images.
- text attacks perturb the captions (edit budget): image-to-text against the adversarial caption gallery,
  text-to-image with the adversarial captions as queries over clean images.
- joint (Co-Attack style): both perturbed; both directions use adversarial images and adversarial captions.
- random starts, restarts and Square's proposals: each image's own stream, seeded from (seed, image index,
  attack), so results do not depend on the batch size or on how images are split across processes.
- transfer: crafted with PGD on a surrogate model's contrastive objective, scored on the target.
- which attacks exist, of which kind, and how each is run and described: ``advlora.attacks.registry``.
- BLIP: scores are ITC, re-ranked by ITM on the top ``rerank_k`` (default: LAVIS's depth for the set's size,
  128, or 256 from 5,000 images: ``default_rerank_k``), for clean and adversarial alike; ``objective="rerank"``
  attacks through that re-ranking. Outside the re-ranked top k the two-stage order is the ITC order, ties
  included (the ITC scores' tie tolerance; a positive tied with the k-th candidate is left out of the top k),
  so re-ranking never moves R@j for j >= rerank_k. An image attack whose objective reports a rank (all but
  transfer and the ``embedding`` and ``itm`` objectives) reports the two-stage i2t rank instead: an image is
  done (early exit), and each attack keeps its worst point, by the rank the metrics report.
- ensemble: per image, the worst case over the image attacks run on the full set (highest i2t rank of its
  best positive, ties broken by the highest contrastive loss), as AutoAttack keeps the worst per sample.
- suites (``standard``), early exit (the default): an image is done once its best positive caption ranks at
  or beyond the exit rank in image-to-text retrieval (``exit_k``, ``--exit-k``: the largest k, 10, unless
  set; lowered to the largest reported k the set's gallery lets an image miss: 5 on a 7-class set, 1 with at
  most 5 classes; recorded as "suite_exit_k"), before any member (its clean rank), during one or after one. Later
  members attack only the images not done, in batches repacked from them; within a member, an image that
  becomes done is no longer queried (``advlora.attacks.stopping``; not under EOT), and its result is the
  point that made it done. Per image the kept adversarial image is the worst, by (i2t rank, then the loss;
  ties keep the earlier), among its clean image and the members that attacked it. Image-to-text recalls up
  to R@exit_k equal those of attacking every image with every member to the end, on a BLIP as on an
  ITC-only model (at a k above it they are upper bounds); the one exception is a tie at the exit rank itself:
  a rank read during an attack takes its tie tolerance from the positives of the images at hand, the final
  one from the whole set's, so a negative within the difference of the two (about 1e-6 of the scores'
  scale) can count in one and not the other. Text-to-image metrics are those of clean captions querying the
  gallery of kept images (an image done early keeps the point that finished it, where an exhaustive run might
  keep a later one).
  A member's row ``<suite>/<member>`` gives the suite's worst so far, over all images, after that member.
- suites, exhaustive (``exhaustive=True``, ``advlora eval --exhaustive``): every member attacks every image;
  a member's row is that member alone; per image the suite keeps the member with the highest i2t rank, ties
  broken by the mean t2i rank of the image's captions in that member's run, then by the contrastive loss.
- a randomized model (five calls on one batch differ by more than a relative 1e-4, or change a top-1 caption)
  is flagged, and its white-box attacks then average the gradient over ``eot_samples`` draws per step
  (expectation over transformation, AutoAttack's ``rand``).
Attack success rate (``advlora.metrics.attack_success_rate``): share of queries right at rank 1 clean that the
attack moves off rank 1, per direction; it is not a recall.
"""


def eval_attacks() -> tuple[str, ...]:
    """The names ``evaluate_robust`` accepts: every registered attack (``advlora.attacks.registry``)."""
    return registry.names()


@dataclass
class AttackResult(Mapping):
    """One attack's robust retrieval on one data set: its threat-model line, robust and clean metrics (percent),
    attack success rates per direction, sizes and time, and what some attacks add (the bounds and mode
    record of an image attack, the subset Square ran on, example adversarial captions, the ensemble's choice).

    Read as a mapping too (``result["metrics"]``; fields that are None are absent), so a result read back from
    JSON and a fresh one are read the same way; ``to_dict`` is its JSON form.
    """

    attack: str
    threat: str
    metrics: dict
    clean: dict
    asr: dict
    n_images: int
    n_texts: int
    seconds: float = 0.0
    checks: dict | None = None
    subset: str | None = None
    whitebox_on_subset: dict | None = None
    examples: list | None = None
    chosen: dict | None = None
    #: per sample: ``i2t``, the rank of each image's best positive caption; ``t2i``, of each caption's image
    ranks: dict | None = None
    #: a suite member under early exit: how many images it attacked
    attacked: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None) if key in self._names() else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    @classmethod
    def _names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


def check_exit_k(exit_k: int | None) -> int:
    """The early-exit rank of a suite (``evaluate_robust(exit_k=)``): an integer >= 1, default ``max(KS)``."""
    if exit_k is None:
        return max(KS)
    if isinstance(exit_k, bool) or not isinstance(exit_k, int) or exit_k < 1:
        raise AdvloraError(f"exit_k must be an integer >= 1 (the rank at which an image is done), got {exit_k!r}")
    return exit_k


def describe(name: str, threat, *, objective: str, gallery: str, options: dict | None = None) -> str:
    """The threat-model line written beside the numbers of attack ``name`` (its declaration's ``line``)."""
    return registry.get(name).line(threat, options or {}, {"objective": objective, "gallery": gallery})


def precision_of(model) -> str:
    """The floating-point type the model computes in (``float32``), for the threat-model lines."""
    p = next(iter(model.parameters()), None)
    return str(p.dtype).replace("torch.", "") if p is not None else "float32"


def limit_indices(n_total: int, n: int | None, seed: int = 0) -> torch.Tensor | None:
    """The image indices ``RetrievalDataset.limit(n, seed)`` keeps (None: all)."""
    if n is None or n >= n_total:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=g)[:n].sort().values


__all__ = ["AttackResult", "FEATURE_BATCH", "GALLERIES", "ITM_BATCH", "KS", "PROTOCOL", "check_exit_k", "describe",
           "eval_attacks", "limit_indices", "precision_of"]
