"""``tecoa``: supervised adversarial training (TeCoA, Mao et al., ICLR 2023), the default objective.

One objective, two forms chosen by the training data (``advlora.training.step``):

- a classification set (class folders, ``emoji-cls``, ``digits``; ``--shots`` for a k-shot sample): TeCoA as
  its authors define it. The model's output is the class-prompt classifier, logit_scale x cosine of the image
  to the prompt-ensembled class embeddings; the update minimises its cross-entropy on adversarial images, and
  the attack maximises the same cross-entropy per image. The class embeddings are encoded once, without
  gradient, so the text tower and the logit scale stay as they are.
- a retrieval set (captions): the batch captions play the class prompts. The attack maximises each image's
  image-to-text multi-positive cross-entropy against the gathered batch captions, and the update minimises the
  model's symmetric contrastive loss (image-to-text and text-to-image; SigLIP's sigmoid loss) on the
  adversarial images, at the model's logit scale.

Published settings (RobustVLM, TeCoA^4 on ViT-L/14): ImageNet with class prompts, PGD-10 linf 4/255 (or 2/255)
step 1/255, AdamW lr 1e-5, wd 1e-4, batch 128, 20,000 steps.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from advlora.training.objectives import AttackInputs, LossInputs, Objective, Terms, register


def caption_attack(a: AttackInputs) -> Callable[[torch.Tensor], torch.Tensor]:
    """Each image's image-to-text cross-entropy against the batch captions or the class prompts (its
    positives), per image."""
    model, contrastive = a.model, a.contrastive

    def objective(x: torch.Tensor) -> torch.Tensor:
        return contrastive(model.encode_image(x))

    return objective


def adversarial_contrastive(inputs: LossInputs) -> Terms:
    """The contrastive loss on the training images (adversarial ones; clean ones under clean training): on a
    classification set, the cross-entropy over the class prompts."""
    itc = inputs.itc(inputs.adv)
    return Terms(itc, parts={"itc": itc})


register(Objective(
    "tecoa", caption_attack, adversarial_contrastive,
    doc="cross-entropy over the class prompts (classification data) or contrastive loss (captions) on "
        "adversarial images, the attack maximising the image-to-text cross-entropy",
    attack_loss=True,
    published="TeCoA^4 (RobustVLM): PGD-10 linf 4/255 step 1/255; AdamW lr 1e-5, wd 1e-4, batch 128, 20k steps"))
