"""``Declarations``: the one registry shape every declared concept uses (attacks, training objectives).

A module declares its item with ``register`` at import; a name is declared once; ``registered`` declares a
throw-away item for the length of a ``with`` block (tests); ``get`` of an unknown name is one ``AdvloraError``
line listing the declared names.
"""
from __future__ import annotations

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


__all__ = ["Declarations"]
