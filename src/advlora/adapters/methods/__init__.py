"""The adapter methods, one module each: importing this package declares every one of them.

Each module subclasses ``advlora.adapters.method.AdapterMethod`` and calls ``register`` at import; nothing
outside its own module compares its name (docs/contracts.md: "Adding an adapter method").
"""
from __future__ import annotations

import importlib
import pkgutil

#: the modules declared first, in this order (``advlora list methods`` shows the baselines first); then the rest
FIRST = ("frozen", "full", "lora", "advlora")


def _import_all() -> None:
    """Import every module of the package (``FIRST``, then by name): each one's ``register`` declares its method."""
    mods = sorted(pkgutil.iter_modules(__path__), key=lambda m: (m.name not in FIRST, FIRST.index(m.name)
                                                                 if m.name in FIRST else 0, m.name))
    for info in mods:
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()
