"""``vpt``: Visual Prompt Tuning (Jia et al., ECCV'22), n learned tokens in the vision tower, shallow or deep.

Shallow (``depth`` 1): ``n_tokens`` tokens join the sequence after the patch embedding; deep (``depth`` J): new
tokens replace the prompt positions at the input of layers 1 .. J-1 as well, so each layer's prompt outputs are
discarded. Where they enter and how each family pools around them: ``advlora.adapters.prompt_vision``. Every
weight stays frozen; the tokens are (J, n, width), initialised as VPT's (``xavier``: uniform(-v, v),
v = sqrt(6 / (3 patch^2 + width))), or ``normal`` (std 1) or ``zeros``. Trained adversarially it is an
adversarial VPT; trained against the class prompts with ``--objective tecoa`` the text tower stays as it is.
"""
from __future__ import annotations

from advlora.adapters.method import register
from advlora.adapters.prompt_vision import LearnedTokens, VisionPromptMethod, VisionPrompts
from advlora.errors import AdvloraError


class Vpt(VisionPromptMethod):
    name = "vpt"
    summary = "VPT: learned vision prompt tokens after the patch embedding, shallow (depth 1) or deep"
    reads = ("n_tokens", "depth", "init", "seed")
    default_init = "xavier"
    defaults = {"n_tokens": 4, "depth": 1}

    def validate(self, cfg) -> None:
        if cfg.n_tokens < 1:
            raise AdvloraError("adapter method vpt needs n_tokens >= 1 (0 tokens train nothing)")

    def build(self, model, cfg, sites) -> VisionPrompts:
        return VisionPrompts(LearnedTokens(cfg.depth, cfg.n_tokens, sites.width, init=cfg.init, seed=cfg.seed,
                                           fan_in=3 * sites.patch ** 2))


register(Vpt())
