"""``AdapterMethod``: the one declaration of an adapter method, and the registry every other module reads.

A method is one module of ``advlora.adapters.methods`` (or a user's file) that subclasses ``AdapterMethod`` and
calls ``register(Method())`` at import. The declaration says everything the rest of the code needs: the name and
one-line summary ``advlora list methods`` prints, the ``AdapterConfig`` fields it reads (validated when the config
is built), how it attaches to a model (which layers, which parameters train), its extra optimiser groups and
regulariser, how it saves, loads and merges, and what ``adapter info`` reports. Nothing outside the method's own
file compares its name: the trainer, the experiments and the CLI ask the declaration (docs/contracts.md:
"Adding an adapter method").
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from advlora.declarations import Declarations
from advlora.errors import AdvloraError, choices_error


class AdapterMethod:
    """The declaration of one adapter method (subclass it; the defaults are those of a method that trains nothing).

    Class attributes:
        name: what users type (``--method lora``).
        summary: one line for ``advlora list methods``.
        family: the kind of adaptation it is (``low-rank``, ``scaling``, ``full``, ``prompt``, ``none``): what the
            leaderboard filters by (``advlora leaderboard``); empty: the method's own name.
        reads: the ``AdapterConfig`` fields the method reads besides ``method`` (the CLI passes only these).
        inits: the names ``AdapterConfig.init`` accepts for this method (empty: it has no initialisation choice).
        default_init: ``init`` when the config leaves it out.
        defaults: ``AdapterConfig`` fields it reads whose None means the method's own default -> that default
            (a vision prompt's ``n_tokens``: 4 for VPT, 5 for TeCoA's visual prompt).
        legacy_inits: ``init`` values that configs and adapter folders written when the method ignored ``init``
            carry (AdvLoRA's default): read as ``default_init``.
        aliases: other names of the method -> the config fields they set (``pissa`` -> lora with init=pissa).
        trains: whether a run trains anything (False: the evaluation-only zero-shot baseline).
        default_lr: the learning rate when the run's config leaves it out.
        targets: whether it adapts the resolved target layers (``AdapterConfig.targets``) rather than whole towers.
        peft_type: peft's ``peft_type`` of the folders it writes (a foreign peft folder of that type loads as it).
        peft_format: its folder holds peft's ``adapter_config.json`` and ``adapter_model.safetensors``, which
            ``peft.PeftModel.from_pretrained`` loads onto the base transformers model (the model card then says
            ``library_name: peft``); False: only advlora's ``load_adapter`` reads the folder (prompts, full
            fine-tuning).
        layer_types: the module types it can adapt; another type is one error line before any work.
        families: the model families (``VLModel.arch``) it supports; None: every family.
        cost_note: why its training step costs more than LoRA's, where known (``advlora bench --methods`` prints it).
        learns_class_text: the method learns the text side of the class-prompt classifier (a text prompt): on a
            classification set the class embeddings are re-encoded, with gradient, at every training step instead
            of once (for the other methods they stay fixed: TeCoA's frozen text tower).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    family: ClassVar[str] = ""
    reads: ClassVar[tuple[str, ...]] = ()
    inits: ClassVar[tuple[str, ...]] = ()
    default_init: ClassVar[str | None] = None
    defaults: ClassVar[dict[str, Any]] = {}
    legacy_inits: ClassVar[tuple[str, ...]] = ()
    aliases: ClassVar[dict[str, dict[str, Any]]] = {}
    trains: ClassVar[bool] = True
    default_lr: ClassVar[float] = 1e-3
    targets: ClassVar[bool] = True
    peft_type: ClassVar[str | None] = None
    peft_format: ClassVar[bool] = False
    layer_types: ClassVar[tuple[type, ...]] = (nn.Linear,)
    families: ClassVar[tuple[str, ...] | None] = None
    cost_note: ClassVar[str | None] = None
    learns_class_text: ClassVar[bool] = False

    # ---- the config ---------------------------------------------------------------------------------------
    def validate(self, cfg) -> None:
        """Refuse a config this method cannot run (one ``AdvloraError`` line); called when the config is built."""

    # ---- attaching ----------------------------------------------------------------------------------------
    def check(self, model, names: list[str]) -> None:
        """Refuse a model family or layer the method does not support, before any work (one error line)."""
        arch = getattr(model, "arch", "")
        if self.families is not None and arch not in self.families:
            raise AdvloraError(f"adapter method {self.name} does not support the {arch or 'unknown'} family "
                               f"(supported: {', '.join(self.families)})")
        modules = dict(model.hf_model.named_modules())
        for n in names:
            parent = modules.get(n.rpartition(".")[0]) if "." in n else model.hf_model
            if not isinstance(modules[n], self.layer_types) or isinstance(parent, nn.MultiheadAttention):
                kind = f"{type(parent).__name__}.{n.rpartition('.')[2]}" if isinstance(
                    parent, nn.MultiheadAttention) else type(modules[n]).__name__
                raise AdvloraError(f"adapter method {self.name} does not support layer {n} ({kind}; supported: "
                                   f"{', '.join(t.__name__ for t in self.layer_types)} outside MultiheadAttention)")

    def attach(self, model, cfg, state, names: list[str], saved: Path | None = None) -> None:
        """Adapt ``model`` in place (its ``hf_model`` is frozen on entry; set ``requires_grad`` on what trains) and
        fill ``state`` (``AdapterState``: ``layers`` and ``report``). ``names``: the target layers (``targets``
        methods). ``saved``: an adapter folder being loaded (its weights are read by ``load`` next): skip any
        costly initialisation that ``load`` overwrites."""

    # ---- training -----------------------------------------------------------------------------------------
    def param_groups(self, model) -> dict[str, list[nn.Parameter]]:
        """Named trainable parameters that need their own optimiser group (``"alpha"``: AdvLoRA's scales, with
        ``train.alpha_lr`` and no weight decay); the rest train in the default group."""
        return {}

    def regularizer(self, model, cfg) -> torch.Tensor | None:
        """The method's training regulariser (added to the loss), or None when it has none (or it is off)."""
        return None

    def logged(self, model) -> dict[str, float]:
        """Per-layer values the training log follows (AdvLoRA's alphas), by layer name."""
        return {}

    def diagnostics(self, model) -> dict[str, float]:
        """Per-layer diagnostics (AdvLoRA's alignment errors), by layer name."""
        return {}

    # ---- files --------------------------------------------------------------------------------------------
    def save(self, model, state, folder: Path, meta: dict) -> None:
        """Write the adapter's files into ``folder`` (peft's format where peft has one, plus what an exact resume
        needs); ``meta`` (advlora.json, written after) may be extended."""

    def load(self, model, state, folder: Path, meta: dict) -> None:
        """Read the files ``save`` wrote onto ``model``, just attached by ``attach(..., saved=folder)``."""

    def from_peft(self, peft_config, tensors: dict[str, torch.Tensor],
                  folder: Path) -> tuple[dict, dict[str, list[int]]] | None:
        """A foreign peft folder of ``peft_type``: (AdapterConfig fields, adapted layer -> [out, in]), or None when
        this method does not read that config (``load`` then reads the folder as it reads its own)."""
        return None

    def merge(self, model, state) -> None:
        """Fold the adapter into the base weights and remove its layers (in place)."""

    # ---- reporting ----------------------------------------------------------------------------------------
    def info(self, cfg) -> dict[str, Any]:
        """What ``adapter_info`` adds for this method: its config fields that tell runs apart, by field name, each
        one it reads (``reads``), and none whose None only means "the method's default" (rank and towers
        ``adapter_info`` adds itself where ``reads`` has them)."""
        return {}


_DECLARED: Declarations[AdapterMethod] = Declarations("adapter method")


def register(method: AdapterMethod) -> AdapterMethod:
    """Declare ``method`` (a module of ``advlora.adapters.methods`` calls this at import); a name is declared once."""
    if not method.name or not method.summary:
        raise AdvloraError(f"adapter method {method.name!r}: a name and a one-line summary")
    return _DECLARED.register(method)


def unregister(name: str) -> None:
    _DECLARED.unregister(name)


def registered(method: AdapterMethod) -> AbstractContextManager[AdapterMethod]:
    """``method`` declared for the duration of a ``with`` block (a throw-away method, e.g. in a test)."""
    return _DECLARED.registered(method)


def names() -> tuple[str, ...]:
    """The declared methods, in declaration order (aliases not included)."""
    return _DECLARED.names()


def _aliases() -> Iterator[tuple[str, AdapterMethod, dict[str, Any]]]:
    for name in _DECLARED.names():
        m = _DECLARED.get(name)
        for alias, fields in m.aliases.items():
            yield alias, m, fields


def choices() -> tuple[str, ...]:
    """Every name ``--method`` accepts: the declared methods and their aliases."""
    return (*names(), *(a for a, _, _ in _aliases()))


class _Choices(Sequence):
    """A live view of ``choices()``: a method declared after import (a plugin, a test's throw-away) is in it."""

    def __getitem__(self, i):
        return choices()[i]

    def __len__(self) -> int:
        return len(choices())

    def __repr__(self) -> str:
        return repr(choices())


#: every name ``--method`` accepts, read live from the registry (declared methods, then aliases)
METHODS: Sequence[str] = _Choices()


def resolve(name: str) -> tuple[AdapterMethod, dict[str, Any]]:
    """(the declaration, the config fields an alias sets) of a method name or alias; an unknown name is one
    ``AdvloraError`` line listing every accepted name."""
    found = _DECLARED.find(name) if isinstance(name, str) else None
    if found is not None:
        return found, {}
    for alias, m, fields in _aliases():
        if alias == name:
            return m, dict(fields)
    raise choices_error("adapter method", name, choices())


def get(name: str) -> AdapterMethod:
    """The declaration of method ``name`` (an alias gives its method)."""
    return resolve(name)[0]


__all__ = ["METHODS", "AdapterMethod", "choices", "get", "names", "register", "registered", "resolve", "unregister"]
