"""Run folders: every command that writes results writes ``config.yaml``, ``manifest.json`` and its outputs
into one folder, created under a temporary name and renamed into place only when the command succeeds.

A user's work is never deleted: a run folder holds ``MARKER`` (the command that created it), and a command
checks its ``--out`` before any work (``check_out``): a missing or empty folder is written, an existing one is
refused in one line unless ``--resume`` continues it or ``--overwrite`` replaces it, and ``--overwrite`` replaces
only a folder holding the marker, i.e. one advlora created.

``manifest.json`` says what is needed to reproduce a run (command line, seed, commit, package versions) and how
it ran (``execution``: processes, torch threads, device, dtype), so that two runs' timings and numbers can be
compared knowing whether one ran on 2 processes or 8 threads.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from advlora.config import dump_yaml
from advlora.errors import AdvloraError
from advlora.io import atomic_dir, atomic_write_text, write_json

PACKAGES = ("advlora", "torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "pillow", "av",
            "numpy", "emoji")


#: the file that marks a folder as made by an advlora command (JSON: the command and when)
MARKER = ".advlora-run"


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


def mark(folder: str | Path, command: str) -> None:
    """Mark ``folder`` as created by ``command`` (``MARKER``)."""
    stamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    write_json(Path(folder) / MARKER, {"command": command, "created": stamp})


def mark_once(folder: str | Path, command: str) -> None:
    """``mark`` a folder that a command wrote, unless it is already marked."""
    if Path(folder).is_dir() and created_by(folder) is None:
        mark(folder, command)


def created_by(folder: str | Path) -> str | None:
    """The advlora command that created ``folder`` (None: no marker, i.e. not advlora's or absent)."""
    try:
        return str(json.loads((Path(folder) / MARKER).read_text(encoding="utf-8")).get("command") or "run")
    except (OSError, ValueError, AttributeError):
        return None


def is_empty(folder: str | Path) -> bool:
    """``folder`` is missing or an empty folder (or holds only ``MARKER``): writing there loses nothing."""
    folder = Path(folder)
    return not folder.exists() or (folder.is_dir() and all(p.name == MARKER for p in folder.iterdir()))


def check_out(out: str | Path, *, overwrite: bool = False, resume: bool | None = None) -> None:
    """Check a command's ``--out`` before any work. A missing or empty folder is fine, and so is an existing one
    with ``overwrite`` when advlora created it; anything else is one error line naming the flags that continue
    (``--resume``, when the command has one: ``resume`` is not None) or replace (``--overwrite``) it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AdvloraError(f"--out {out} is a file, not a folder; choose another --out")
    if is_empty(out):
        return
    owner = created_by(out)
    if overwrite:
        if owner is None:
            raise AdvloraError(f"--overwrite: {out} was not created by advlora (no {MARKER} in it) and is never "
                               "replaced; choose another --out")
        return
    if resume:
        return
    if owner is None:
        raise AdvloraError(f"--out {out} already exists and holds files advlora did not create; choose another "
                           "--out (advlora never replaces them)")
    flags = "continue it with --resume or replace it with --overwrite" if resume is not None \
        else "replace it with --overwrite"
    raise AdvloraError(f"--out {out} already exists and holds an advlora {owner} run; choose another --out, {flags}")


def check_experiment_out(out: str | Path, command: str) -> None:
    """The ``--out`` of a command that resumes its own folder (``grid``, ``demo``, ``ablate``: rerunning the same
    line continues): a missing or empty folder, or one this command made (its marker, or the ``grid.yaml`` every
    grid-run folder holds), is fine; any other is one error line, checked before any work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AdvloraError(f"--out {out} is a file, not a folder; choose another --out")
    owner = created_by(out)
    if is_empty(out) or owner == command or (owner is None and (out / "grid.yaml").is_file()):
        return
    held = f"an advlora {owner} run" if owner else "files advlora did not create"
    raise AdvloraError(f"--out {out} already exists and holds {held}; choose another --out ({command} resumes only "
                       "a folder it made)")


@contextlib.contextmanager
def replacing(out: str | Path, worth_keeping: Callable[[Path], bool]) -> Iterator[None]:
    """``--overwrite`` for a command that writes into its folder as it goes (``train``): the old folder (checked
    by ``check_out``) is moved aside while the command runs and deleted when it succeeds. When the command fails,
    the new folder is removed and the old one put back, unless the new one is ``worth_keeping`` (it holds a
    checkpoint): then both stay, and one line on stderr says where the old one is."""
    out = Path(out)
    if is_empty(out):
        yield
        return
    aside = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    os.replace(out, aside)
    try:
        yield
    except BaseException:
        if out.exists() and worth_keeping(out):
            print(f"advlora: the run folder {out} that --overwrite replaces is kept in {aside}", file=sys.stderr)
        else:
            shutil.rmtree(out, ignore_errors=True)
            os.replace(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def run_folder(out: str | Path, config: Any, *, seed: int | None = None, argv: list[str] | None = None,
               execution: dict[str, Any] | None = None, command: str = "run") -> Iterator[Path]:
    """Yield a temporary folder holding ``config.yaml``, ``manifest.json`` (with ``execution``, see
    ``manifest``) and ``MARKER`` (made by ``command``); it becomes ``out`` on success. An existing ``out`` is
    replaced only when advlora created it (the command checked it with ``check_out`` before any work)."""
    if not is_empty(out) and created_by(out) is None:
        raise AdvloraError(f"{out} exists and was not created by advlora; it is never replaced (choose another --out)")
    with atomic_dir(out) as tmp:
        mark(tmp, command)
        atomic_write_text(tmp / "config.yaml", dump_yaml(config))
        write_json(tmp / "manifest.json", manifest(seed, argv, execution))
        yield tmp
