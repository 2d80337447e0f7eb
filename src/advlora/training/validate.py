"""Validation and the final test of a training run: clean retrieval and PGD robust retrieval.

Robust retrieval (as the attacks issue defines it): each image is perturbed once, maximising its multi-positive
image-to-text cross-entropy against the whole (clean) caption gallery; image-to-text recall ranks the clean
captions for the adversarial image, text-to-image recall ranks the adversarial images for each clean caption.
BLIP is attacked and ranked through ITC here (no ITM re-ranking); the full pipeline is ``advlora eval``.
"""
from __future__ import annotations

import torch

from advlora.data.dataset import RetrievalDataset
from advlora.evaluation.retrieval import encode_images, encode_texts, eval_mode, evaluate_clean
from advlora.losses import per_image_contrastive
from advlora.metrics import retrieval_recall_features
from advlora.training.step import call_attack


def threat_model(attack_cfg, eps, steps: int, seed: int):
    from advlora.attacks import ThreatModel

    return ThreatModel(norm=attack_cfg.norm, eps=attack_cfg.eps if eps is None else eps, steps=steps,
                       random_start=True, seed=seed)


def robust_metrics(model, dataset: RetrievalDataset, threat, attack: str = "pgd", batch_size: int = 64,
                   progress: bool = False) -> dict[str, float]:
    """Recall@1/5/10 and r_mean with every image replaced by its adversarial version."""
    from tqdm.auto import tqdm

    from advlora.attacks import ATTACKS

    images = dataset.load_images(model.image_size)
    text = encode_texts(model, dataset.captions).clone()  # not an inference tensor: it enters autograd
    pos_all = torch.zeros(len(dataset), len(dataset.captions), dtype=torch.bool)
    pos_all[dataset.txt2img, torch.arange(len(dataset.captions))] = True
    generator = threat.generator()
    scale = model.logit_scale.detach()
    advs = []
    with eval_mode(model):
        for s in tqdm(range(0, len(images), batch_size), desc=f"val {attack}", leave=False, disable=not progress):
            x = images[s:s + batch_size].to(model.device)
            pos = pos_all[s:s + batch_size].to(model.device)

            def objective(z: torch.Tensor, pos=pos) -> torch.Tensor:
                return per_image_contrastive(model.encode_image(z), text, scale, pos)

            advs.append(call_attack(ATTACKS[attack], objective, x, eps=threat.eps, step_size=threat.step_size,
                                    steps=threat.steps, norm=threat.norm, random_start=threat.random_start,
                                    restarts=threat.restarts, generator=generator).detach().cpu())
    adv_feats = encode_images(model, torch.cat(advs), batch_size) if advs else torch.zeros(0)
    return retrieval_recall_features(adv_feats, text, dataset.txt2img)


def validate(model, dataset: RetrievalDataset, threat=None, *, attack: str = "pgd", rerank_k: int | None = 0,
             batch_size: int = 64, progress: bool = False) -> dict[str, dict[str, float] | str]:
    """{"clean": metrics, "robust": metrics, "threat": description}; no robust part when ``threat`` is None."""
    out: dict = {"clean": evaluate_clean(model, dataset, batch_size=batch_size, rerank_k=rerank_k)}
    if threat is not None:
        out["robust"] = robust_metrics(model, dataset, threat, attack, batch_size, progress)
        out["threat"] = threat.describe(attack)
    return out


__all__ = ["robust_metrics", "threat_model", "validate"]
