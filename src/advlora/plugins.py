"""Plugins: a user's modules that register families, adapter methods, objectives, attacks or formats, imported
before an ``advlora`` command runs; and ``"module:attribute"`` references resolved when they are first needed.

Every registry of advlora is filled by ``register`` calls at import, so a plugin is any importable module (or a
``.py`` file) whose import runs such calls. ``load_plugins`` imports, in this order: the modules of the
entry-point group ``advlora.plugins`` of every installed distribution, those of the ``ADVLORA_PLUGINS``
environment variable (comma-separated), and those given (the CLI's repeatable ``--plugin MODULE``). It then
names every module it imported in ``ADVLORA_PLUGINS``, so that an ``advlora`` process started by this one (a
grid's worker) imports them too. docs/contracts.md ("Plugins") and docs/howto-plugin.md show a complete plugin.

``resolve("module:attribute")`` is how a declaration names code of a later stage without importing it: the
tiny defaults' builder (``advlora.models.family``) names the pre-training of the training stage this way.
This module imports no torch.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from advlora.errors import AdvloraError

#: the entry-point group a distribution names its advlora plugins in (``[project.entry-points."advlora.plugins"]``)
ENTRY_POINT_GROUP = "advlora.plugins"
#: the environment variable of plugin modules or ``.py`` files, comma-separated
ENV = "ADVLORA_PLUGINS"


def resolve(reference: str) -> Any:
    """The object a ``"package.module:attribute"`` reference names, its module imported now."""
    module, sep, attr = reference.partition(":")
    if not sep or not module or not attr:
        raise AdvloraError(f"reference {reference!r} must look like package.module:attribute")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise AdvloraError(f"cannot resolve {reference!r}: {e}") from None


def import_plugin(name: str) -> ModuleType:
    """Import one plugin: a dotted module name on ``sys.path``, or the path of a ``.py`` file (imported under its
    file's stem, kept in ``sys.modules`` so that its declarations pickle by reference)."""
    path = Path(name)
    try:
        if name.endswith(".py"):
            if not path.is_file():
                raise AdvloraError(f"plugin {name!r}: no such file")
            mod_name = path.stem
            if mod_name in sys.modules and getattr(sys.modules[mod_name], "__file__", None) == str(path.resolve()):
                return sys.modules[mod_name]
            spec = importlib.util.spec_from_file_location(mod_name, path.resolve())
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(mod_name, None)
                raise
            return module
        return importlib.import_module(name)
    except AdvloraError as e:
        raise AdvloraError(f"plugin {name!r}: {e}") from None
    except ImportError as e:
        raise AdvloraError(f"plugin {name!r} cannot be imported: {e}") from None


def entry_point_plugins() -> list[str]:
    """The modules (or ``module:attribute`` references) of the ``advlora.plugins`` entry points installed."""
    return [ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]


def env_plugins() -> list[str]:
    """The plugins named in ``ADVLORA_PLUGINS`` (comma-separated, blanks ignored)."""
    return [p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip()]


def load_plugins(given: Iterable[str] = ()) -> list[str]:
    """Import the entry-point plugins, those of ``ADVLORA_PLUGINS`` and ``given``, each once, in that order;
    returns their names. An entry point ``module:attribute`` imports its module (the attribute, when callable,
    is called: a plugin may register from a function)."""
    loaded: list[str] = []
    for ref in entry_point_plugins():
        module, _, attr = (part.strip() for part in ref.partition(":"))
        target = import_plugin(module)
        if attr and callable(hook := getattr(target, attr, None)):
            hook()
        loaded.append(module)
    installed = len(loaded)
    for name in [*env_plugins(), *given]:
        if name not in loaded:
            import_plugin(name)
            loaded.append(name)
    if loaded[installed:]:
        os.environ[ENV] = ",".join(loaded[installed:])
    return loaded


__all__ = ["ENTRY_POINT_GROUP", "ENV", "entry_point_plugins", "env_plugins", "import_plugin", "load_plugins",
           "resolve"]
