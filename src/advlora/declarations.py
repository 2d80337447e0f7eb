"""``Declarations``: the one registry shape every declared concept uses (attacks, attack objectives, training
objectives).

A module declares its item with ``register`` at import; a name is declared once; ``registered`` declares a
throw-away item for the length of a ``with`` block (tests); ``get`` of an unknown name is one ``AdvloraError``
line listing the declared names. ``import_all(package)`` imports every public module of a package, so a module
that declares an item is found without editing any other file.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from advlora.errors import AdvloraError, choices_error

T = TypeVar("T")


class Declarations(Generic[T]):
    """Items of one kind (``kind``: the word error lines use) by their ``name`` attribute, in declaration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: dict[str, T] = {}

    def register(self, item: T) -> T:
        name = item.name
        if name in self.items and self.items[name] != item:
            raise AdvloraError(f"{self.kind} {name!r} is declared twice")
        self.items[name] = item
        return item

    def unregister(self, name: str) -> None:
        self.items.pop(name, None)

    @contextmanager
    def registered(self, item: T) -> Iterator[T]:
        self.register(item)
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
