"""What an evaluation reads from its data set's task: the positives of each image, its ranks and its metrics.

Two tasks share one attack machinery (``advlora.evaluation.robust``): an image attack moves an image against a
gallery of text embeddings, and every number is read off the rank of the image's positives there.

- retrieval (``RetrievalDataset``): the gallery is the captions, an image's positives are its own captions;
  metrics: Recall@1/5/10 both ways and ``r_mean`` (``advlora.metrics.retrieval_recall``).
- classification (``ClassificationDataset``): the gallery is one prompt-ensembled embedding per class, an image's
  positive is its class; image-to-text R@k over that gallery is top-k accuracy. Metrics:
  ``advlora.metrics.classification_accuracy`` (``top1``, ``top5``, the same as ``i2t_r{k}``, and their mean as
  ``r_mean``). There is no text-to-image direction: its ranks are empty (its attack success rate is nan).
"""
from __future__ import annotations

import torch

from advlora.data.classification import ClassificationDataset
from advlora.data.dataset import RetrievalDataset
from advlora.evaluation.results import KS
from advlora.evaluation.sanity import chance_r_mean
from advlora.metrics import (
    classification_accuracy,
    classification_chance,
    classification_ranks,
    i2t_ranks,
    retrieval_recall,
    t2i_ranks,
)


class Retrieval:
    """Image-text retrieval: each image's positives are its captions (``txt2img``)."""

    name = "retrieval"

    @staticmethod
    def positives(data: RetrievalDataset, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: the captions of each image of ``idx``."""
        return data.txt2img[None, :] == idx[:, None]

    @staticmethod
    def ranks(data: RetrievalDataset, s_i2t: torch.Tensor, s_t2i: torch.Tensor, tie_dtype: torch.dtype | None = None,
              tie_tol: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return (i2t_ranks(s_i2t, data.txt2img, tie_dtype=tie_dtype, tie_tol=tie_tol),
                t2i_ranks(s_t2i, data.txt2img, tie_dtype=tie_dtype, tie_tol=tie_tol))

    @staticmethod
    def metrics(data: RetrievalDataset, s_i2t: torch.Tensor, s_t2i: torch.Tensor,
                tie_dtype: torch.dtype | None = None, tie_tol: float | None = None) -> dict[str, float]:
        return retrieval_recall(s_i2t, data.txt2img, sim_t2i=s_t2i, tie_dtype=tie_dtype, tie_tol=tie_tol)

    @staticmethod
    def subset_i2t_ranks(data: RetrievalDataset, s_i2t: torch.Tensor, indices: torch.Tensor,
                         tie_dtype: torch.dtype | None = None, tie_tol: float | None = None) -> torch.Tensor:
        """(len(indices),) i2t rank of each image of a subset (rows of ``s_i2t``) against the whole caption
        gallery: the subset's captions map to its rows, every other caption to one extra row, so it counts as
        a negative of every subset image."""
        local = torch.full((len(data),), len(indices), dtype=torch.long)
        local[indices] = torch.arange(len(indices))
        s = torch.cat([s_i2t, torch.zeros(1, s_i2t.shape[1], dtype=s_i2t.dtype, device=s_i2t.device)])
        return i2t_ranks(s, local[data.txt2img], tie_dtype=tie_dtype, tie_tol=tie_tol)[:len(indices)]

    @staticmethod
    def chance(data: RetrievalDataset) -> float:
        return chance_r_mean(data.txt2img, len(data))

    @staticmethod
    def reachable_rank(data: RetrievalDataset) -> int:
        """The largest i2t rank every image's best positive can reach: the number of negative captions of the
        image with the most captions."""
        per = torch.bincount(data.txt2img, minlength=len(data)) if len(data.txt2img) else torch.zeros(1)
        return int(len(data.captions) - int(per.max()))


class Classification:
    """Zero-shot classification: each image's one positive is its class among the class texts."""

    name = "classification"

    @staticmethod
    def positives(data: ClassificationDataset, idx: torch.Tensor) -> torch.Tensor:
        labels = data.labels.to(idx.device)[idx]
        return labels[:, None] == torch.arange(len(data.captions), device=idx.device)[None, :]

    @staticmethod
    def ranks(data: ClassificationDataset, s_i2t: torch.Tensor, s_t2i: torch.Tensor,
              tie_dtype: torch.dtype | None = None, tie_tol: float | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        return (classification_ranks(s_i2t, data.labels.to(s_i2t.device), tie_dtype=tie_dtype, tie_tol=tie_tol),
                torch.zeros(0, dtype=torch.long))

    @staticmethod
    def metrics(data: ClassificationDataset, s_i2t: torch.Tensor, s_t2i: torch.Tensor,
                tie_dtype: torch.dtype | None = None, tie_tol: float | None = None) -> dict[str, float]:
        return classification_accuracy(s_i2t, data.labels.to(s_i2t.device), tie_dtype=tie_dtype, tie_tol=tie_tol)

    @staticmethod
    def subset_i2t_ranks(data: ClassificationDataset, s_i2t: torch.Tensor, indices: torch.Tensor,
                         tie_dtype: torch.dtype | None = None, tie_tol: float | None = None) -> torch.Tensor:
        """(len(indices),) rank of each subset image's own class."""
        return classification_ranks(s_i2t, data.labels[indices].to(s_i2t.device), tie_dtype=tie_dtype,
                                    tie_tol=tie_tol)

    @staticmethod
    def chance(data: ClassificationDataset) -> float:
        return classification_chance(len(data.captions))

    @staticmethod
    def reachable_rank(data: ClassificationDataset) -> int:
        """The largest rank an image's class can reach: the number of other classes."""
        return len(data.captions) - 1


def task_of(data: RetrievalDataset) -> type[Retrieval] | type[Classification]:
    """The task of a data set, from its type."""
    return Classification if isinstance(data, ClassificationDataset) else Retrieval


def exit_rank(data: RetrievalDataset, exit_k: int) -> int:
    """The early-exit rank a suite uses on ``data`` when ``exit_k`` is asked for: ``exit_k``, lowered to the
    largest reported k (``results.KS``) that every image can still miss (a rank the set's gallery allows,
    ``reachable_rank``). A reported k beyond it is 100 % whatever an attack does, so waiting for an image to
    reach it would attack every image to the end for nothing: a 7-class set exits at rank 5, a set of at most
    5 classes at rank 1 (the first misclassification, as AutoAttack stops)."""
    reachable = task_of(data).reachable_rank(data)
    missable = [k for k in KS if k <= reachable]
    return min(exit_k, max(missable)) if missable else 1


def task_name(data: RetrievalDataset) -> str:
    return task_of(data).name


__all__ = ["Classification", "Retrieval", "exit_rank", "task_name", "task_of"]
