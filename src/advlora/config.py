"""Config plumbing: dataclasses from YAML dicts, dotted command-line overrides, and back to YAML.

Each pipeline stage defines its own dataclass next to its code (``AdapterConfig``, ``ThreatModel``,
``TrainConfig``...); this module only converts. Unknown keys are errors that name the key and the valid ones.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from advlora.errors import AdvloraError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with one clear error for a missing or malformed file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdvloraError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise AdvloraError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AdvloraError(f"{path}: expected a mapping at the top level")
    return data


def parse_value(text: str) -> Any:
    """A command-line value as YAML reads it, plus numbers YAML 1.1 leaves as strings (``1e-4``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def set_dotted(d: dict, dotted: str, value: Any) -> None:
    """``set_dotted(d, "train.lr", 1e-4)`` sets ``d["train"]["lr"]``."""
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise AdvloraError(f"override --{dotted}: {k!r} is not a section")
        cur = nxt
    cur[keys[-1]] = value


def parse_overrides(argv: list[str], *, top_level: bool = False) -> dict:
    """``["--train.lr", "1e-4", "--adapter.rank=8"]`` -> ``{"train": {"lr": 1e-4}, "adapter": {"rank": 8}}``.

    The one parser of dotted command-line overrides (``advlora train``, ``grid``, ``ablate``). ``top_level``
    also admits keys without a dot (``--seeds [0,1]``). Values are read as YAML here; ``from_dict`` converts
    and checks them by the field's type when the config is built.
    """
    out: dict = {}
    i = 0
    example = "--train.lr 1e-4" if not top_level else "--eval.limit 100"
    while i < len(argv):
        arg = argv[i]
        key = arg[2:].split("=", 1)[0]
        if not arg.startswith("--") or not key or (not top_level and "." not in key):
            raise AdvloraError(f"unrecognised argument {arg!r} (overrides look like {example})")
        if "=" in arg:
            text = arg[2:].split("=", 1)[1]
            i += 1
        else:
            if i + 1 >= len(argv):
                raise AdvloraError(f"override {arg} needs a value")
            text = argv[i + 1]
            i += 2
        set_dotted(out, key, parse_value(text))
    return out


def merge(base: dict, over: dict) -> dict:
    """Recursive dict merge; ``over`` wins."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a dict, recursing into nested dataclass fields; unknown keys are errors."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise AdvloraError(f"unknown config key {where}{sorted(unknown)[0]!r} (valid: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = _dataclass_type(hints.get(name))
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value, f"{where}{name}.")
        else:
            value = _convert(hints.get(name), value, f"{where}{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise AdvloraError(f"config {where.rstrip('.') or cls.__name__}: {e}") from None


def _scalar_types(hint: Any) -> set[type]:
    """The plain types a hint admits: ``float | None`` -> {float, NoneType}; empty for anything else."""
    args = typing.get_args(hint) if (isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union) \
        else (hint,)
    return {a for a in args if a in (bool, int, float, str, type(None))}


def _convert(hint: Any, value: Any, name: str) -> Any:
    """A value as its field's type admits it: numbers given as text (``"1e-3"`` from a command line) become
    int / float; a bool field takes only true / false; anything the type refuses is one clear error."""
    kinds = _scalar_types(hint)
    if bool in kinds and not isinstance(value, bool) and value is not None:
        # a switch given as a word that is not true/false ("maybe") would otherwise count as on
        raise AdvloraError(f"config {name}: expected true or false, got {value!r}")
    numeric = float in kinds and type(value) is int  # an int is a float as typing's numeric tower reads it
    if value is None or not kinds or type(value) in kinds or str in kinds or numeric:
        return value
    if isinstance(value, bool):
        raise AdvloraError(f"{name} must be a number, got {value!r}")
    if int in kinds:
        if isinstance(value, int):
            return value
        try:
            f = float(value)
            if f.is_integer():
                return int(f)
        except (TypeError, ValueError, OverflowError):
            pass
        if float not in kinds:
            raise AdvloraError(f"{name} must be an integer, got {value!r}")
    if float in kinds:
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
        raise AdvloraError(f"{name} must be a number, got {value!r}")
    return value


def _dataclass_type(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        for a in typing.get_args(hint):
            if dataclasses.is_dataclass(a):
                return a
    return None


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (for YAML/JSON); a dataclass with a ``config_dict()`` method writes its own."""
    if dataclasses.is_dataclass(obj) and hasattr(obj, "config_dict"):
        return to_dict(obj.config_dict())
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)
