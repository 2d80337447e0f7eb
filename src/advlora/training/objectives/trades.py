"""``trades``: the clean contrastive loss plus ``beta`` KL(clean || adversarial) of the image-to-text
distributions over the batch captions, the attack maximising that KL (TRADES, Zhang et al., ICML 2019).

``attack.beta`` weighs the KL term. Under clean training (attack ``none``) only the contrastive loss remains.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from advlora.losses import kl_per_image
from advlora.training.objectives import AttackInputs, LossInputs, Objective, Terms, register
from advlora.training.objectives.tecoa import adversarial_contrastive


def kl_attack(a: AttackInputs) -> Callable[[torch.Tensor], torch.Tensor]:
    model, text, scale = a.model, a.text, a.scale
    with torch.no_grad():
        clean_logits = scale * model.encode_image(a.clean) @ text.t()

    def objective(x: torch.Tensor) -> torch.Tensor:
        return kl_per_image(clean_logits, scale * model.encode_image(x) @ text.t())

    return objective


def trades_loss(inputs: LossInputs) -> Terms:
    if inputs.clean is None:
        return adversarial_contrastive(inputs)
    itc = inputs.itc(inputs.clean)
    s, text = inputs.scale, inputs.text
    kl = inputs.mean(kl_per_image(s * inputs.clean @ text.t(), s * inputs.adv @ text.t()))
    return Terms(itc, inputs.config.beta * kl, {"itc": itc, "kl": kl})


register(Objective(
    "trades", kl_attack, trades_loss, clean_features=True, stationary=True,
    doc="clean contrastive loss + beta KL(clean || adversarial), the attack maximising the KL"))
