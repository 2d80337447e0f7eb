"""pyproject's version bounds make no claim nothing checks: every dependency's lower bound is the version
constraints.txt pins (the versions CI installs and the tests run on), so an older release a user might have is
never declared compatible without a run on it."""
from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            out[canonicalize_name(name)] = version.strip()
    return out


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project.get("optional-dependencies", {}).values() for r in group]
    return [Requirement(r) for r in (*project["dependencies"], *extras)]


def lower_bound(req: Requirement) -> str | None:
    return next((s.version for s in req.specifier if s.operator in (">=", "==")), None)


def test_every_lower_bound_is_the_pinned_version():
    pinned = pins()
    reqs = requirements()
    assert {"torch", "transformers", "peft", "pytest"} <= {canonicalize_name(r.name) for r in reqs}
    wrong = {r.name: (lower_bound(r), pinned.get(canonicalize_name(r.name))) for r in reqs
             if lower_bound(r) != pinned.get(canonicalize_name(r.name))}
    assert not wrong, f"lower bound != constraints.txt pin (bound, pin): {wrong}"


def test_the_pins_satisfy_the_bounds():
    pinned = pins()
    for r in requirements():
        assert r.specifier.contains(pinned[canonicalize_name(r.name)], prereleases=True), r
