"""Atomic file and folder writes, the cache location and run folders.

Everything advlora writes goes to a temporary name first and is renamed into place, so that an
interrupted command never leaves a half-written result, checkpoint or cache entry behind. The temporary names
are made private by ``tempfile`` (600 / 700); they are given the modes the user's umask gives any new file or
folder before they are renamed into place.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from advlora.errors import AdvloraError, WriteFailed


def advlora_home() -> Path:
    """The cache root: ``$ADVLORA_HOME``, default ``~/.cache/advlora``."""
    return Path(os.environ.get("ADVLORA_HOME", Path.home() / ".cache" / "advlora")).expanduser()


def umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _public(path: str | Path, folder: bool) -> None:
    """Give a ``tempfile`` file or folder the mode a plain ``open`` / ``mkdir`` would have under the umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


@contextlib.contextmanager
def atomic_dir(target: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; rename it to ``target`` only if the block succeeds."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        _public(tmp, folder=True)
    except OSError as e:
        raise WriteFailed(f"cannot write to {target.parent}: {e.strerror or e}") from None
    try:
        yield tmp
        if target.exists():
            if not overwrite:
                raise AdvloraError(f"{target} already exists")
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            _public(tmp, folder=False)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise WriteFailed(f"cannot write {path}: {e.strerror or e}") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
