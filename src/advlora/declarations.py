"""``Declarations``: the one registry shape every declared concept uses (attacks, attack objectives, training
objectives, adapter methods and initialisations, model families and loaders, annotation and results formats,
evaluation protocols).

A module declares its item with ``register`` at import; a name is declared once (the same item again is a no-op);
``register(item, at=0)`` places it first (lookups that ask in order, e.g. loaders and format detection);
``registered`` declares a throw-away item for the length of a ``with`` block (tests); ``get`` of an unknown name
is one ``AdvloraError`` line listing the declared names; ``view`` is a read-only, live name -> item mapping (the
module constants ``FAMILIES``, ``FORMATS``, ... are it). A concept whose item brings entries of another registry
(a family its loader and sizes) passes ``on_register`` / ``on_unregister``, so that ``registered`` and
``unregister`` take them back too. ``import_all(package)`` imports every public module of a package, so a module
that declares an item is found without editing any other file.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Generic, TypeVar

from advlora.errors import AdvloraError, choices_error

T = TypeVar("T")


class Declarations(Generic[T]):
    """Items of one kind (``kind``: the word error lines use) by their ``name`` attribute, in declaration order."""

    def __init__(self, kind: str, *, on_register: Callable[[T], object] | None = None,
                 on_unregister: Callable[[T], object] | None = None) -> None:
        self.kind = kind
        self.items: dict[str, T] = {}
        #: the declared items by name, in order: read-only, and live (an item declared later is in it)
        self.view: Mapping[str, T] = MappingProxyType(self.items)
        self._on_register = on_register
        self._on_unregister = on_unregister

    def register(self, item: T, at: int | None = None) -> T:
        """Declare ``item`` under its ``name``: last, or at position ``at`` of the declaration order (0: first)."""
        name = item.name
        if name in self.items:
            if self.items[name] != item:
                raise AdvloraError(f"{self.kind} {name!r} is declared twice")
            return self.items[name]
        if self._on_register is not None:
            self._on_register(item)
        if at is None:
            self.items[name] = item
        else:
            entries = list(self.items.items())
            entries.insert(at, (name, item))
            self.items.clear()          # in place: ``view`` reads this very dict
            self.items.update(entries)
        return item

    def unregister(self, name: str) -> None:
        item = self.items.pop(name, None)
        if item is not None and self._on_unregister is not None:
            self._on_unregister(item)

    @contextmanager
    def registered(self, item: T, at: int | None = None) -> Iterator[T]:
        """``item`` declared (at ``at``, see ``register``) for the length of the ``with`` block."""
        self.register(item, at)
        try:
            yield item
        finally:
            self.unregister(item.name)

    def get(self, name: str) -> T:
        try:
            return self.items[name]
        except (KeyError, TypeError):
            raise choices_error(self.kind, name, self.items) from None

    def find(self, name: str) -> T | None:
        return self.items.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(self.items)


def import_all(package: str, path) -> None:
    """Import every module of ``package`` (its ``__path__``) whose name does not start with ``_``, in name order:
    each one's ``register`` call fills its registry."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


__all__ = ["Declarations", "import_all"]
