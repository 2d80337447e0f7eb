"""Evaluation: embeddings, similarity, BLIP's ITM re-ranking and clean retrieval metrics."""
from advlora.evaluation.retrieval import encode_images, encode_texts, evaluate_clean, itm_rerank, retrieval_scores

__all__ = ["encode_images", "encode_texts", "evaluate_clean", "itm_rerank", "retrieval_scores"]
