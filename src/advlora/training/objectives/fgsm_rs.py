"""``fgsm-rs``: fast adversarial training (Wong et al., ICLR 2020): ``tecoa``'s loss and attack objective under
one FGSM step from a uniform random start, step 1.25 eps (``attack.step_size`` overrides it). The objective fixes
the attack (``attack.name: fgsm``, random start); the radius is the run's ``attack.eps``."""
from __future__ import annotations

from advlora.training.objectives import Objective, register
from advlora.training.objectives.tecoa import adversarial_contrastive, caption_attack

register(Objective("fgsm-rs", caption_attack, adversarial_contrastive,
                   attack={"name": "fgsm", "random_start": True}, attack_loss=True,
                   doc="tecoa under FGSM with random start, step 1.25 eps (fast adversarial training)"))
