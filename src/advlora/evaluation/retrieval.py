"""Clean retrieval evaluation: encode, score (ITC, then ITM re-ranking for BLIP), and recall.

Runs under ``torch.inference_mode`` with the model in eval mode (restored afterwards).
"""
from __future__ import annotations

import torch

from advlora.data.dataset import RetrievalDataset
from advlora.metrics import retrieval_recall, retrieval_recall_features
from advlora.models.base import VLModel
from advlora.runtime import eval_mode


def encode_images(model: VLModel, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """(N, 3, H, W) pixels in [0, 1] -> (N, D) unit embeddings, in batches, without gradient."""
    with torch.inference_mode(), eval_mode(model):
        return torch.cat([model.encode_image(images[i:i + batch_size].to(model.device))
                          for i in range(0, len(images), batch_size)]) if len(images) else torch.zeros(0)


def encode_texts(model: VLModel, captions: list[str], batch_size: int = 256) -> torch.Tensor:
    """N captions -> (N, D) unit embeddings, in batches, without gradient."""
    with torch.inference_mode(), eval_mode(model):
        return torch.cat([model.encode_text(captions[i:i + batch_size]) for i in range(0, len(captions), batch_size)])


def itm_rerank(model: VLModel, sim: torch.Tensor, images: torch.Tensor, captions: list[str], k: int = 16,
               batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """BLIP's two-stage retrieval, as LAVIS evaluates it.

    For each image, its top-k captions by ITC are re-scored with ``itm + itc``; likewise for each caption and
    its top-k images. Everything outside a query's top k stays at -100. Returns (sim_i2t, sim_t2i).
    """
    n_img, n_txt = sim.shape
    k_i2t, k_t2i = min(k, n_txt), min(k, n_img)
    sim_i2t = torch.full_like(sim, -100.0)
    sim_t2i = torch.full_like(sim, -100.0)
    with torch.inference_mode(), eval_mode(model):
        states = torch.cat([model.image_states(images[i:i + batch_size].to(model.device))
                            for i in range(0, n_img, batch_size)])
        top_v, top_j = sim.topk(k_i2t, dim=1)                                    # (I, k)
        pairs_i = torch.arange(n_img).repeat_interleave(k_i2t)
        scores = _itm_pairs(model, states, captions, pairs_i, top_j.flatten().cpu(), batch_size)
        sim_i2t.scatter_(1, top_j, scores.view(n_img, k_i2t).to(sim) + top_v)
        top_v, top_i = sim.t().topk(k_t2i, dim=1)                                # (T, k)
        pairs_j = torch.arange(n_txt).repeat_interleave(k_t2i)
        scores = _itm_pairs(model, states, captions, top_i.flatten().cpu(), pairs_j, batch_size)
        sim_t2i.t().scatter_(1, top_i, scores.view(n_txt, k_t2i).to(sim) + top_v)
    return sim_i2t, sim_t2i


def _itm_pairs(model: VLModel, states: torch.Tensor, captions: list[str], img_idx: torch.Tensor,
               txt_idx: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = []
    for s in range(0, len(img_idx), batch_size):
        ii, jj = img_idx[s:s + batch_size], txt_idx[s:s + batch_size]
        logits = model.itm_logits_from_states(states[ii], [captions[j] for j in jj.tolist()])
        out.append(logits[:, 1])
    return torch.cat(out) if out else torch.zeros(0)


def retrieval_scores(model: VLModel, images: torch.Tensor, captions: list[str], *, rerank_k: int | None = None,
                     text_features: torch.Tensor | None = None, batch_size: int = 128
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sim_i2t, sim_t2i) for images against captions; equal unless BLIP re-ranks with ITM (``rerank_k``)."""
    img = encode_images(model, images, batch_size)
    txt = encode_texts(model, captions) if text_features is None else text_features
    sim = img @ txt.t()
    if rerank_k and model.has_itm:
        return itm_rerank(model, sim, images, captions, rerank_k)
    return sim, sim


def default_rerank_k(model: VLModel) -> int | None:
    """BLIP re-ranks the top 16 by default on small sets (LAVIS uses 256 on COCO, 128 on Flickr30K)."""
    return 16 if model.has_itm else None


def evaluate_clean(model: VLModel, dataset: RetrievalDataset, *, batch_size: int = 128,
                   rerank_k: int | None = -1) -> dict[str, float]:
    """Clean Recall@1/5/10 both ways and r_mean on ``dataset`` (``rerank_k=-1``: the backend's default)."""
    from advlora.models.video import for_dataset

    model = for_dataset(model, dataset)  # video sets: frame pooling, same contract
    images = dataset.load_images(model.image_size)
    k = default_rerank_k(model) if rerank_k == -1 else rerank_k
    if not (k and model.has_itm):  # single-stage: the fused path never holds the full similarity matrix
        return retrieval_recall_features(encode_images(model, images, batch_size),
                                         encode_texts(model, dataset.captions), dataset.txt2img)
    sim_i2t, sim_t2i = retrieval_scores(model, images, dataset.captions, rerank_k=k, batch_size=batch_size)
    return retrieval_recall(sim_i2t, dataset.txt2img, sim_t2i=sim_t2i)
