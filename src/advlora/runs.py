"""Run folders: every command that writes results writes ``config.yaml``, ``manifest.json`` and its outputs
into one folder, created under a temporary name and renamed into place only when the command succeeds."""
from __future__ import annotations

import contextlib
import datetime as _dt
import platform
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from advlora.config import dump_yaml
from advlora.io import atomic_dir, atomic_write_text, write_json

PACKAGES = ("advlora", "torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "pillow", "av",
            "numpy", "emoji")


def default_out(command: str) -> Path:
    return Path("runs") / f"{command}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def manifest(seed: int | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """Package versions, seed, git commit and command line: what is needed to reproduce a run."""
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return {
        "command": " ".join(["advlora", *(sys.argv[1:] if argv is None else argv)]),
        "seed": seed,
        "git_commit": _git_commit(),
        "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@contextlib.contextmanager
def run_folder(out: str | Path, config: Any, *, seed: int | None = None,
               argv: list[str] | None = None) -> Iterator[Path]:
    """Yield a temporary folder holding ``config.yaml`` and ``manifest.json``; it becomes ``out`` on success."""
    with atomic_dir(out) as tmp:
        atomic_write_text(tmp / "config.yaml", dump_yaml(config))
        write_json(tmp / "manifest.json", manifest(seed, argv))
        yield tmp
