"""``visual-prompt``: TeCoA's visual prompt, a learned padding frame of width p plus appended tokens (AdvVP).

The frame (TeCoA's ``PadPrompter``) is added to the image inside the model, *after* the resize to the model's
resolution and the mean/std normalisation, as TeCoA adds it (``prompter(clip_img_preprocessing(x))``): an
attack still perturbs the [0, 1] image and its gradient passes through the frame. Its width ``prompt_size``
defaults to TeCoA's 30 px at 224 px, scaled to the model's resolution (4 px at the tiny models' 32 px); a frame
that leaves no image inside is one error line. ``n_tokens`` tokens (TeCoA's ``TokenPrompter``, no positional
embedding) are appended after the patch tokens; the default 5 with the 30 px frame is the AdvVP that FAP
compares with (``trainers/zsrobust.py``), and ``n_tokens 0`` is the frame alone. Frame and tokens are initialised
``normal`` (std 1, TeCoA's randn) or ``zeros`` (a zero frame and no tokens leave the model's features as they are).
TeCoA trains the prompt with SGD at lr 40; with AdamW the default here is 1e-2, the frame being in normalised
pixel units (std 1 at the start). Where the prompts enter: ``advlora.adapters.prompt_vision``.
"""
from __future__ import annotations

from advlora.adapters.method import register
from advlora.adapters.prompt_vision import LearnedTokens, PadFrame, VisionPromptMethod, VisionPrompts, frame_width


class VisualPrompt(VisionPromptMethod):
    name = "visual-prompt"
    summary = "TeCoA's visual prompt: a learned padding frame added to the image, plus appended tokens (AdvVP)"
    reads = ("prompt_size", "n_tokens", "init", "seed")
    inits = ("normal", "zeros")
    default_init = "normal"
    defaults = {"n_tokens": 5}
    default_lr = 1e-2

    def build(self, model, cfg, sites) -> VisionPrompts:
        frame = PadFrame(sites.image_size, frame_width(sites.image_size, cfg.prompt_size), init=cfg.init,
                         seed=cfg.seed)
        tokens = (LearnedTokens(1, cfg.n_tokens, sites.width, init=cfg.init, seed=cfg.seed + 4, fan_in=0)
                  if cfg.n_tokens else None)
        return VisionPrompts(tokens, frame)


register(VisualPrompt())
