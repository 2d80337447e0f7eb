"""``fare``: unsupervised adversarial fine-tuning of the image encoder (FARE, Schlarmann et al., ICML 2024).

The loss is the squared l2 distance between the embedding of the adversarial image under the model being
trained and the embedding of the clean image under the frozen original model, ``||phi(x_adv) - phi_0(x)||_2^2``
(summed over the embedding, averaged over the batch; the raw projected embeddings, not unit norm), and the
attack maximises the same distance. No captions: a run trains from images alone (``--data`` a folder of images,
``advlora.data.images``; an annotated set's captions are not read), validation and the final test read
``--eval-data``. phi_0 is ``advlora.training.reference.OriginalModel`` (the adapters switched off, or a frozen
copy of the base model). Only the image encoder receives gradient; a text adapter or unfrozen text tower stays
as it was.

FARE's published settings (RobustVLM ``train/adversarial_training_clip.py``, FARE^4 on ViT-L/14): PGD-10 linf
eps 4/255 (FARE^2: 2/255), step 1/255, uniform random start, ImageNet training images without labels, AdamW lr
1e-5, weight decay 1e-4, batch 128, 20,000 steps (1,400 warm-up), the vision encoder fully fine-tuned. In
advlora: ``advlora train --objective fare --method full --attack.steps 10 --attack.step_size 1/255 --eps 4/255
--lr 1e-5 --train.weight_decay 1e-4``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from advlora.training.objectives import AttackInputs, LossInputs, Objective, Terms, register


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) squared l2 distance of the rows of two (B, D) tensors, in float32 (FARE's ``l2``: summed over D)."""
    if a.shape != b.shape:
        raise ValueError(f"embeddings {tuple(a.shape)} and {tuple(b.shape)} differ in shape")
    return (a.float() - b.float()).pow(2).sum(dim=1)


def distance_attack(a: AttackInputs) -> Callable[[torch.Tensor], torch.Tensor]:
    """Each image's squared distance from the original model's embedding of its clean image."""
    model, reference = a.model, a.reference

    def objective(x: torch.Tensor) -> torch.Tensor:
        return squared_distance(model.encode_image(x, normalize=False), reference)

    return objective


def embedding_distance(inputs: LossInputs) -> Terms:
    dist = inputs.mean(squared_distance(inputs.adv, inputs.reference))
    return Terms(torch.zeros((), device=dist.device), dist, {"fare": dist})


register(Objective(
    "fare", distance_attack, embedding_distance, captions=False, reference=True, normalize=False,
    doc="||phi(x_adv) - phi_0(x)||^2 to the frozen original model, the attack maximising it; images only",
    published="FARE^4 (RobustVLM): PGD-10 linf 4/255 step 1/255; AdamW lr 1e-5, wd 1e-4, batch 128, 20k steps"))
