"""``frozen``: no adapter and no training, the pre-trained model as it is (the zero-shot baseline)."""
from __future__ import annotations

from advlora.adapters.method import AdapterMethod, register


class Frozen(AdapterMethod):
    name = "frozen"
    summary = "no training: the pre-trained model as it is (the zero-shot baseline)"
    family = "none"
    trains = False
    targets = False


register(Frozen())
