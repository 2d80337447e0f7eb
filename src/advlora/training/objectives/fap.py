"""``fap``: the loss of FAP (Zhou et al., NeurIPS 2024, "Few-shot adversarial prompt learning"), with its
TRADES-style attack.

The update minimises the clean cross-entropy plus a KL consistency term weighted per image by the similarity of
the clean and adversarial image features:

    CE(p(x), y) + beta * mean_i[ KL(p(x_i) || p(x_adv_i)) * (cos(f(x_i), f(x_adv_i)) + 1) ]

with p the class-prompt classifier (on captions: the distribution over the batch captions) and f the unit image
features; nothing is detached. The attack maximises KL(p(x) || p(x_adv)), the clean distribution computed once
per step with the current model (``trades``' attack). ``attack.beta`` is FAP's LAMBDA_1: 1.5 in its scripts
(the config default is 1.0).

FAP's published settings (lionel-w2/FAP scripts; ``methods-and-protocols.md`` section 5): its prompts on CLIP
ViT-B/32, PGD-2 linf 1/255 step 1/255 in training, SGD lr 0.0035, batch 4, 10 epochs, 16 shots; evaluated with
PGD-100 at 1/255.
"""
from __future__ import annotations

import torch.nn.functional as F

from advlora.losses import kl_per_image
from advlora.training.objectives import LossInputs, Objective, Terms, register
from advlora.training.objectives.tecoa import adversarial_contrastive
from advlora.training.objectives.trades import kl_attack


def fap_loss(inputs: LossInputs) -> Terms:
    if inputs.clean is None:     # clean training: the cross-entropy alone
        return adversarial_contrastive(inputs)
    ce = inputs.itc(inputs.clean)
    s, text = inputs.scale, inputs.text
    kl = kl_per_image(s * inputs.clean @ text.t(), s * inputs.adv @ text.t())
    weight = F.cosine_similarity(inputs.clean.float(), inputs.adv.float(), dim=-1) + 1
    consistency = inputs.mean(kl * weight)
    return Terms(ce, inputs.config.beta * consistency, {"itc": ce, "kl": consistency})


register(Objective(
    "fap", kl_attack, fap_loss, clean_features=True, stationary=True,
    doc="FAP: clean cross-entropy + beta x KL(clean || adversarial) weighted by (cos(f_clean, f_adv) + 1), "
        "the attack maximising the KL",
    published="FAP (NeurIPS'24): PGD-2 linf 1/255 step 1/255, beta (LAMBDA_1) 1.5; SGD lr 0.0035, batch 4, "
              "10 epochs, 16 shots"))
