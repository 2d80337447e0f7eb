"""``apt`` and ``apt-constant``: Adversarial Prompt Tuning (Li et al., CVPR 2024, "One prompt word is enough to
boost adversarial robustness for pre-trained vision-language models"; repo TreeLLi/APT).

APT trains a learned text context (``--method coop``) with

    min_ctx  CE(logit_scale * cos(f(x + delta*), T(ctx, classes)), y),   delta* = PGD ascent on the same CE

and no clean term. Which prompt the adversary sees is APT's ``AT.PROMPT``:

- ``apt`` (its default, ``onfly``): the current learned prompt. The class embeddings are re-encoded at every step
  (``AdapterMethod.learns_class_text``); the attack reads them without gradient, the update with it.
- ``apt-constant`` (``constant``): fixed text features, the text tower without the learned prompt in the set's
  templates ("a photo of a {}." for a class folder without a templates file), encoded once; the update still
  reads the current prompt.

The attack maximises the image-to-class cross-entropy (APT's PGD on CE; ``attack.attack_loss`` is not read). On
captions the batch captions play the class prompts (the ``tecoa`` loss; ``apt-constant`` attacks the captions
encoded without the prompt). APT's "perturbed" prompt variant is not implemented (its own code never runs it:
``methods-and-protocols.md`` section 2).

Published settings (APT README): CoOp context of 16 tokens, class at the end, on a TeCoA-fine-tuned image
encoder (ViT-B/32), PGD-3 linf 4/255 step 2.67/255 (alpha = 2/3 eps), SGD lr 0.002, batch 32, cosine, 1 warm-up
epoch; evaluated with PGD-100 at the training eps, step eps/4.
"""
from __future__ import annotations

from advlora.training.objectives import Objective, register
from advlora.training.objectives.tecoa import adversarial_contrastive, caption_attack

PUBLISHED = ("APT (CVPR'24): coop n_ctx 16, PGD-3 linf 4/255 step 2.67/255, no clean term; SGD lr 0.002, batch 32, "
             "cosine")

register(Objective(
    "apt", caption_attack, adversarial_contrastive,
    doc="APT: cross-entropy over the class prompts on adversarial images, the attack against the current learned "
        "prompt (on the fly)",
    published=PUBLISHED))

register(Objective(
    "apt-constant", caption_attack, adversarial_contrastive, attack_text="constant",
    doc="APT with a constant prompt: the attack against the text features without the learned prompt, the "
        "update through it",
    published=PUBLISHED))
