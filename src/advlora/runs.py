"""Run folders: every command that writes results writes ``config.yaml``, ``manifest.json`` and its outputs
into one folder, created under a temporary name and renamed into place only when the command succeeds.

``manifest.json`` says what is needed to reproduce a run (command line, seed, commit, package versions) and how
it ran (``execution``: processes, torch threads, device, dtype), so that two runs' timings and numbers can be
compared knowing whether one ran on 2 processes or 8 threads.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
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


def execution(*, device: object = None, dtype: object = None, processes: int | None = None,
              **extra: Any) -> dict[str, Any]:
    """How this process runs: ``processes`` (the world size: ``WORLD_SIZE`` of torchrun / accelerate launch, else
    1), torch's intra-op and inter-op ``threads``, ``OMP_NUM_THREADS``, the ``device`` (with the GPU's name on
    CUDA) and ``dtype`` (``None`` where the caller does not say), and any ``extra`` fields (mixed precision).

    torch is read only when already imported (this module sits below every stage and imports no torch)."""
    torch = sys.modules.get("torch")
    if processes is None:
        try:
            processes = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            processes = 1
    out: dict[str, Any] = {
        "processes": processes,
        "threads": torch.get_num_threads() if torch is not None else None,
        "interop_threads": torch.get_num_interop_threads() if torch is not None else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_cores": os.cpu_count(),
        "device": None if device is None else str(device),
        "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
    }
    if torch is not None and out["device"] and out["device"].startswith("cuda") and torch.cuda.is_available():
        with contextlib.suppress(Exception):  # the name is informative only
            out["gpu"] = torch.cuda.get_device_name(torch.device(out["device"]))
    out.update(extra)
    return out


def manifest(seed: int | None = None, argv: list[str] | None = None,
             execution_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Package versions, seed, git commit and command line: what is needed to reproduce a run; and how it ran
    (``execution_info``, default ``execution()``: processes and threads, device and dtype unknown)."""
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
        "execution": execution() if execution_info is None else execution_info,
    }


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@contextlib.contextmanager
def run_folder(out: str | Path, config: Any, *, seed: int | None = None, argv: list[str] | None = None,
               execution: dict[str, Any] | None = None) -> Iterator[Path]:
    """Yield a temporary folder holding ``config.yaml`` and ``manifest.json`` (with ``execution``, see
    ``manifest``); it becomes ``out`` on success."""
    with atomic_dir(out) as tmp:
        atomic_write_text(tmp / "config.yaml", dump_yaml(config))
        write_json(tmp / "manifest.json", manifest(seed, argv, execution))
        yield tmp
