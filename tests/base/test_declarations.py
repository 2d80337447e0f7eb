"""``Declarations``, the one registry shape: declaration order, placement, throw-away items, the live view and
the hooks a concept uses to bring entries of another registry."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from advlora.declarations import Declarations
from advlora.errors import AdvloraError


@dataclass(frozen=True)
class Item:
    name: str
    value: int = 0


def test_register_get_and_the_unknown_name_line():
    reg: Declarations[Item] = Declarations("widget")
    a, b = reg.register(Item("a")), reg.register(Item("b"))
    assert reg.get("a") is a and reg.find("b") is b and reg.find("c") is None
    assert reg.names() == ("a", "b")
    with pytest.raises(AdvloraError, match=r"^unknown widget 'c' \(valid: a, b\)$"):
        reg.get("c")
    assert reg.register(Item("a")) is a                     # the same declaration again: nothing changes
    with pytest.raises(AdvloraError, match="widget 'a' is declared twice"):
        reg.register(Item("a", 1))
    assert reg.get("a").value == 0


def test_at_places_an_item_and_the_view_follows_live_and_read_only():
    reg: Declarations[Item] = Declarations("widget")
    view = reg.view
    for name in "abc":
        reg.register(Item(name))
    reg.register(Item("first"), at=0)
    reg.register(Item("mid"), at=2)
    assert reg.names() == ("first", "a", "mid", "b", "c") and list(view) == list(reg.names())
    assert view["mid"] is reg.get("mid")
    with pytest.raises(TypeError):
        view["x"] = Item("x")                               # type: ignore[index]
    with reg.registered(Item("tmp"), at=1) as tmp:
        assert list(view)[1] == "tmp" and view["tmp"] is tmp
    assert "tmp" not in view and reg.names() == ("first", "a", "mid", "b", "c")


def test_the_hooks_bring_and_take_back_what_an_item_declares():
    parts: Declarations[Item] = Declarations("part")
    reg: Declarations[Item] = Declarations(
        "widget", on_register=lambda item: parts.register(Item(f"{item.name}:part")),
        on_unregister=lambda item: parts.unregister(f"{item.name}:part"))
    reg.register(Item("kept"))
    with reg.registered(Item("a")):
        assert parts.names() == ("kept:part", "a:part")
        reg.register(Item("a"))                             # no second part for the same declaration
        assert parts.names() == ("kept:part", "a:part")
    assert parts.names() == ("kept:part",)
    with pytest.raises(AdvloraError, match="part 'kept:part' is declared twice"):
        Declarations("other", on_register=lambda item: parts.register(Item("kept:part", 1))).register(Item("x"))
    reg.unregister("nothing")                               # an unknown name: nothing to take back
    assert parts.names() == ("kept:part",)
