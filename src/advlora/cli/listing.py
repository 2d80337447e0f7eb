"""``advlora list KIND``: what the registries hold, one name and a one-line description a line.

Each kind is one function of ``SOURCES`` that reads its registry (attacks: ``advlora.attacks.registry``; models:
the tiny defaults, the ``backends()`` of ``advlora.models`` and the random sizes of ``advlora.models.tiny``; data
sets: ``advlora.data.EMBEDDED``; formats: ``advlora.data.FORMATS``; methods: ``advlora.adapters.method``;
objectives: the declarations of ``advlora.training.objectives``; protocols: the evaluation presets of
``advlora.evaluation.protocols``; configs: the YAML files of ``advlora.configs``; inits: the initialisations of
``advlora.adapters.init``; exports: the results formats of ``advlora.experiments.exports``),
so a registry that moves is re-pointed in one place. Each function reads its registry when it is called, so what
a plugin registered after import (``advlora --plugin MODULE list KIND``, ``advlora.plugins``) is listed too.
``entries(kind)`` is the same list for other tools (a generated reference). Every kind but ``configs`` imports
torch: the registries are declared in modules that do.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from importlib import resources

from advlora.cli.common import examples, print_json
from advlora.errors import choices_error

#: the command needs no torch until a registry is read (its ``run`` imports what the kind needs)
TORCH_FREE = True
EXAMPLES = examples("advlora list attacks", "advlora list formats", "advlora list configs --json")

Entry = tuple[str, str]


def _first_sentence(doc: str | None, limit: int = 96) -> str:
    """The first sentence of a docstring without its parentheses, cut to ``limit`` characters."""
    if not doc:
        return ""
    text = " ".join(doc.strip().split())
    for _ in range(3):
        text = re.sub(r"\s*\([^()]*\)", "", text)
    text = re.split(r"(?<=[.;])\s", text, maxsplit=1)[0].rstrip(".:;").replace("``", "")
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def attacks() -> list[Entry]:
    """Every registered attack: its kind, the threat-model fields it reads, its options, and its module's
    summary."""
    from advlora.attacks import registry

    mods = [m for name, m in sorted(sys.modules.items()) if name.startswith("advlora.attacks.") and m is not None]
    out = []
    for s in registry.specs():
        mod = next((m for m in mods if any(v is s for v in vars(m).values())), None)
        summary = _first_sentence(getattr(mod, "__doc__", None)) or s.label
        extra = "".join([f", options {s.options}" if s.options else "",
                         f", objective {s.objective}" if s.objective else ""])
        out.append((s.name, f"{s.kind}: {summary} [reads {', '.join(s.uses) or '-'}{extra}]"))
    return out


def models() -> list[Entry]:
    """The tiny defaults (pre-trained and cached on first use), each loadable ``model_type`` of a hub id or
    folder, and the random models of ``--random-model``."""
    from advlora.models import FAMILIES, backends, tiny_defaults
    from advlora.models.tiny import SIZES

    out = [(name, f"the tiny {arch.upper()} advlora pre-trains on emoji-source, cached under "
                  f"$ADVLORA_HOME/models/{name} (built on first use)") for name, arch in tiny_defaults().items()]
    out += [(f"<hub id or folder>:{t}", f"a checkpoint whose config.json has model_type {t!r}: "
                                        f"{b.model_class} behind {b.wrapper.__name__}") for t, b in backends().items()]
    out += [(f"--random-model {arch}:{size}", f"random {arch.upper()} weights of size {size} (no download)")
            for arch in FAMILIES for size in SIZES]
    return out


#: one line per embedded data set (``advlora.data.EMBEDDED`` lists the names; a name without a line here is
#: still listed)
DATASET_NOTES = {
    "emoji": "every emoji rendered with Noto Color Emoji, captioned with its name (built on first use)",
    "emoji-source": "the emoji up to the source Unicode version: what tiny-clip / tiny-blip are pre-trained on",
    "emoji-downstream": "the later emoji, never seen in pre-training: the adaptation task",
    "emoji-video": "an emoji moving across a coloured frame, captioned with its name and direction",
}


def datasets() -> list[Entry]:
    from advlora.data import EMBEDDED

    out = [(name, DATASET_NOTES.get(name, "embedded data set")) for name in EMBEDDED]
    out.append(("<annotation file or folder>", "any file of a format of 'advlora list formats'"))
    out.append(("<shards-{00000..00009}.tar>", "webdataset shards written by 'advlora data shard' (training)"))
    return out


def formats() -> list[Entry]:
    from advlora.data import FORMATS

    return [(f.name, f.doc + ("" if f.detect is not None else " (not detected: name it with --format)"))
            for f in FORMATS.values()]


def methods() -> list[Entry]:
    """The declarations of ``advlora.adapters.method``, each with its summary and its trainable parameters on a
    random tiny CLIP (the tiny defaults' architecture) at the default config (rank 8); then the aliases."""
    import copy

    from advlora.adapters import adapter_info, attach_adapter
    from advlora.adapters import method as registry
    from advlora.models.tiny import random_model

    base = random_model("clip", "tiny", seed=0)
    out = []
    for name in registry.names():
        model = attach_adapter(copy.deepcopy(base), name)
        out.append((name, f"{registry.get(name).summary} ({adapter_info(model)['trainable']:,} trainable on the "
                          f"tiny CLIP)"))
    for alias in registry.choices()[len(registry.names()):]:
        method, fields = registry.resolve(alias)
        out.append((alias, f"{method.name} with {', '.join(f'{k}={v}' for k, v in fields.items())}"))
    return out


def inits() -> list[Entry]:
    """The initialisations of ``advlora.adapters.init`` (``--adapter.init NAME`` of the low-rank methods), each
    with its one-line ``doc``; which methods take which is each method's ``inits``."""
    from advlora.adapters.init import INITIALISATIONS

    return [(name, (i.doc or "adapter initialisation").replace("``", "")) for name, i in INITIALISATIONS.items()]


def exports() -> list[Entry]:
    """The results formats of ``advlora.experiments.exports`` (``advlora results --format NAME``)."""
    from advlora.experiments.exports import DECLARED

    return [(name, DECLARED.get(name).doc or "results format") for name in DECLARED.names()]


def objectives() -> list[Entry]:
    """The declarations of ``advlora.training.objectives``, each with its own one-line ``doc``."""
    from advlora.training import objectives as registry

    return [(name, registry.get(name).doc or "training objective") for name in registry.names()]


def protocols() -> list[Entry]:
    """The evaluation presets of ``advlora.evaluation.protocols`` (``advlora eval --protocol NAME``), each with
    its description and every setting it declares."""
    from advlora.evaluation.protocols import PROTOCOLS

    out = [(name, PROTOCOLS.get(name).summary()) for name in PROTOCOLS.names()]
    out.append(("<file.yaml>", "a protocol of your own: a YAML file with the same fields (docs/evaluation.md, "
                               "\"Protocols\")"))
    return out


def configs() -> list[Entry]:
    """The YAML files shipped in ``advlora.configs``: the first line of their leading comment that is not a
    command line."""
    out = []
    for f in sorted(resources.files("advlora.configs").iterdir(), key=lambda f: f.name):
        if not f.name.endswith(".yaml"):
            continue
        lines = [ln.lstrip("# ").strip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
        text = _first_sentence(" ".join(ln for ln in lines if ln and not ln.startswith("advlora ")))
        use = "advlora grid --config" if f.name.startswith("grid-") else "advlora train --config"
        out.append((f.name[:-5], f"{text} ({use} {f.name[:-5]})"))
    return out


#: kind -> the function that reads its registry
SOURCES: dict[str, Callable[[], list[Entry]]] = {
    "attacks": attacks, "models": models, "datasets": datasets, "formats": formats, "methods": methods,
    "objectives": objectives, "configs": configs, "protocols": protocols, "inits": inits, "exports": exports,
}


def entries(kind: str) -> list[Entry]:
    """(name, one-line description) of every entry of ``kind`` (a key of ``SOURCES``)."""
    if kind not in SOURCES:
        raise choices_error("list kind", kind, SOURCES)
    return SOURCES[kind]()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=tuple(SOURCES), metavar="KIND", help="one of: " + ", ".join(SOURCES))
    p.add_argument("--json", action="store_true", help="print the entries as one JSON object {name: description}")


def run(args: argparse.Namespace) -> int:
    rows = entries(args.kind)
    if args.json:
        print_json(dict(rows))
        return 0
    width = min(32, max(len(n) for n, _ in rows))
    for name, text in rows:
        print(f"{name:<{width}}  {text}" if len(name) <= width else f"{name}\n{'':<{width}}  {text}")
    return 0
