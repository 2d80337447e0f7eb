"""The randomized-model check and EOT, measured: the pre-trained tiny CLIP, and the same model adding fresh
uniform noise of 8/255 to its input at every call, under the ``standard`` suite at 2/255 on 64 emoji-source test
images (docs/evaluation.md, "Randomized models").

Rows: the plain model (``standard``); the noisy model with the randomized check bypassed (``standard``, no EOT);
the noisy model under the ``rand`` members with EOT 1 (the same attacks without the expectation); the noisy model
as evaluated (flagged: ``standard-rand``, EOT 20). Needs the cached tiny CLIP (``make demo`` or
``advlora pretrain``). Run: ``PYTHONPATH=src python scripts/randomized_model.py``.
"""
from __future__ import annotations

import dataclasses
import time
from unittest import mock

import torch

from advlora.attacks import ThreatModel, registry
from advlora.attacks.registry import AttackSpec
from advlora.attacks.standard import RAND_MEMBERS
from advlora.data import load_dataset
from advlora.evaluation import robust
from advlora.evaluation.probes import Randomness
from advlora.models.delegate import Delegating
from advlora.training.pretrain import load_model


class Noisy(Delegating):
    """``base`` with fresh uniform noise of ``amount`` added to its input at every call (a randomized model)."""

    def __init__(self, base, amount: float = 8 / 255) -> None:
        super().__init__(base)
        self.amount = amount

    def encode_image(self, x, *args, **kwargs):
        noise = (torch.rand_like(x) * 2 - 1) * self.amount
        return self.base.encode_image((x + noise).clamp(0, 1), *args, **kwargs)


def main() -> None:
    torch.manual_seed(0)
    base = load_model("tiny-clip")
    data = load_dataset("emoji-source", "test", limit=64, seed=0)
    threat = ThreatModel(eps="2/255")
    noisy = Noisy(base)
    eot1 = AttackSpec("standard-rand-eot1", "suite", None, uses=("norm", "eps", "seed"), label="standard-rand-eot1",
                      members=tuple(dataclasses.replace(m, eot=1) for m in RAND_MEMBERS), checks=("bounds",))
    print("| model | flagged | suite | clean r_mean | robust r_mean | seconds |")
    print("|---|---|---|---|---|---|")

    def row(label: str, model, attack: str, bypass: bool = False) -> None:
        t = time.perf_counter()
        check = (lambda *a: Randomness(0.0)) if bypass else robust.is_randomized
        with mock.patch.object(robust, "is_randomized", check):
            res = robust.evaluate_robust(model, data, [attack], threat, batch_size=32, sanity=False, rerank_k=0)
        line = res["attacks"][attack].threat            # "linf eps=2/255 <suite>(...)"
        suite = line.split("(")[0].split()[-1]
        flagged = "yes" if suite.endswith("-rand") else "no"
        print(f"| {label} | {flagged} | `{suite}` | {res['clean']['r_mean']:.1f} | "
              f"{res['attacks'][attack]['metrics']['r_mean']:.1f} | {time.perf_counter() - t:.0f} |", flush=True)

    row("plain", base, "standard")
    row("noisy, check bypassed", noisy, "standard", bypass=True)
    with registry.registered(eot1):
        row("noisy, rand members without EOT", noisy, eot1.name)
    row("noisy", noisy, "standard")


if __name__ == "__main__":
    main()
