"""``tecoa``: supervised adversarial contrastive training, the default objective.

TeCoA (Mao et al., ICLR 2023) trains on adversarial images with the cross-entropy of each image against the
text embeddings, the attack maximising that cross-entropy. Here the batch captions play the text embeddings of
classification: the attack maximises each image's image-to-text multi-positive cross-entropy against the
gathered batch captions, and the update minimises the model's symmetric contrastive loss (image-to-text and
text-to-image) on the adversarial images. (TeCoA's own loss is the image-to-text direction against fixed class
prompts, with logits 100 x cosine; advlora's retrieval training uses both directions and the model's scale.)
Published settings (RobustVLM, TeCoA^4 on ViT-L/14): ImageNet with class prompts, PGD-10 linf 4/255 (or 2/255)
step 1/255, AdamW lr 1e-5, wd 1e-4, batch 128, 20,000 steps.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from advlora.training.objectives import AttackInputs, LossInputs, Objective, Terms, register


def caption_attack(a: AttackInputs) -> Callable[[torch.Tensor], torch.Tensor]:
    """Each image's image-to-text cross-entropy against the batch captions (its positives), per image."""
    model, contrastive = a.model, a.contrastive

    def objective(x: torch.Tensor) -> torch.Tensor:
        return contrastive(model.encode_image(x))

    return objective


def adversarial_contrastive(inputs: LossInputs) -> Terms:
    """The contrastive loss on the training images (adversarial ones; clean ones under clean training)."""
    itc = inputs.itc(inputs.adv)
    return Terms(itc, parts={"itc": itc})


register(Objective(
    "tecoa", caption_attack, adversarial_contrastive,
    doc="contrastive loss on adversarial images, the attack maximising the image-to-text cross-entropy",
    attack_loss=True,
    published="TeCoA^4 (RobustVLM): PGD-10 linf 4/255 step 1/255; AdamW lr 1e-5, wd 1e-4, batch 128, 20k steps"))
