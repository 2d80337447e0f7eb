"""``mix``: a weighted sum of the contrastive losses on the clean and the adversarial images,
``clean_weight * clean + (1 - clean_weight) * adversarial`` (``attack.clean_weight``), under ``tecoa``'s attack."""
from __future__ import annotations

from advlora.training.objectives import LossInputs, Objective, Terms, register
from advlora.training.objectives.tecoa import adversarial_contrastive, caption_attack


def mixed_contrastive(inputs: LossInputs) -> Terms:
    if inputs.clean is None:
        return adversarial_contrastive(inputs)
    clean, adv = inputs.itc(inputs.clean), inputs.itc(inputs.adv)
    w = inputs.config.clean_weight
    itc = w * clean + (1 - w) * adv
    return Terms(itc, parts={"itc_clean": clean, "itc_adv": adv, "itc": itc})


register(Objective("mix", caption_attack, mixed_contrastive, clean_features=True, attack_loss=True,
                   doc="clean_weight x clean + (1 - clean_weight) x adversarial contrastive loss"))
