"""``pmg-aft``: pre-trained-model-guided adversarial fine-tuning (PMG-AFT, Wang et al., CVPR 2024).

The update minimises the cross-entropy on the adversarial images plus two KL terms, as the authors' code
(``PMG_AFT.py``, train()) writes them:

    CE(p(x_adv), y) + sum_i KL(p(x_i) || p(x_adv_i)) + sum_i KL(p_0(x_adv_i) || p(x_adv_i))

with p the class-prompt classifier of the model under training (on captions: the distribution over the batch
captions), p_0 the frozen original model's (``advlora.training.reference.OriginalModel``) on the same adversarial
images and the same text embeddings, and no weights. The KL terms are sums over the batch (the code's
``KLDivLoss(reduction="sum")``) while the cross-entropy is a batch mean, so they weigh the batch size times
more; nothing is detached. The attack maximises the cross-entropy (``tecoa``'s attack).

PMG-AFT's published settings (its README: TinyImageNet): the vision encoder only, PGD-2 linf 1/255 step 1/255,
SGD lr 5e-5 momentum 0.9, batch 256, 10 epochs, 1000 warm-up steps, template "This is a photo of a {}".
"""
from __future__ import annotations

from advlora.losses import kl_per_image
from advlora.training.objectives import LossInputs, Objective, Terms, register
from advlora.training.objectives.tecoa import adversarial_contrastive, caption_attack


def pmg_aft_loss(inputs: LossInputs) -> Terms:
    if inputs.clean is None:     # clean training: the cross-entropy alone
        return adversarial_contrastive(inputs)
    ce = inputs.itc(inputs.adv)
    s, text = inputs.scale, inputs.text
    adv = s * inputs.adv @ text.t()
    total = inputs.count          # LossInputs.mean divides by the global count: times it, the batch sum
    kl_clean = inputs.mean(kl_per_image(s * inputs.clean @ text.t(), adv)) * total
    kl_original = inputs.mean(kl_per_image(s * inputs.reference @ text.t(), adv)) * total
    return Terms(ce, kl_clean + kl_original, {"itc": ce, "kl": kl_clean, "kl_original": kl_original})


register(Objective(
    "pmg-aft", caption_attack, pmg_aft_loss, clean_features=True, reference=True, reference_images="adv",
    doc="PMG-AFT: adversarial cross-entropy + KL(clean || adv) + KL(original model on adv || adv), summed over the "
        "batch",
    published="PMG-AFT (CVPR'24): PGD-2 linf 1/255 step 1/255; SGD lr 5e-5, batch 256, 10 epochs, vision only"))
