"""Validation and the final test of a training run: clean and PGD robust retrieval, or (a classification set)
clean and robust top-1 over its prompt-ensembled class embeddings.

Robust retrieval is the evaluation sweep (``advlora.evaluation.sweep``, the protocol of ``advlora eval``), run
without its sanity checks to keep validation cheap; ``rerank_k`` chooses ITC only (0) or BLIP's ITM re-ranking.
"""
from __future__ import annotations

from advlora.data.dataset import RetrievalDataset
from advlora.evaluation.retrieval import evaluate_clean
from advlora.evaluation.sweep import SweepSettings, evaluate_data
from advlora.evaluation.tasks import task_name


def robust_metrics(model, dataset: RetrievalDataset, threat, attack: str = "pgd", batch_size: int = 64,
                   rerank_k: int | None = 0) -> dict[str, float]:
    """Recall@1/5/10 and r_mean under ``attack``: ``advlora.evaluation.robust`` without its sanity checks."""
    settings = SweepSettings(attacks=[attack], rerank_k=rerank_k, batch_size=batch_size, sanity=False)
    res = evaluate_data(model, dataset, [threat], settings).runs[0]
    return res["attacks"][attack]["metrics"]


def validate(model, dataset: RetrievalDataset, threat=None, *, attack: str = "pgd", rerank_k: int | None = 0,
             batch_size: int = 64, progress: bool = False) -> dict[str, dict[str, float] | str]:
    """{"clean": metrics, "robust": metrics, "threat": description}; no robust part when ``threat`` is None."""
    if task_name(dataset) == "classification":   # the class-prompt classifier (evaluate_data's clean path)
        settings = SweepSettings(attacks=[], batch_size=batch_size, sanity=False)
        out: dict = {"clean": evaluate_data(model, dataset, [], settings).clean}
    else:
        out = {"clean": evaluate_clean(model, dataset, batch_size=batch_size, rerank_k=rerank_k)}
    if threat is not None:
        out["robust"] = robust_metrics(model, dataset, threat, attack, batch_size, rerank_k)
        out["threat"] = threat.describe(attack)
    return out


__all__ = ["robust_metrics", "validate"]
