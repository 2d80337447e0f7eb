"""``stable_hash``: a 63-bit hash of a string that is the same in every process, run and machine (Python's
``hash`` is salted per process). Per-sample attack seeds (``advlora.attacks.seeding``) and the shard reader's
caption ids, caption draws and epoch digests (``advlora.data.shards``) are built on it."""
from __future__ import annotations

import hashlib


def stable_hash(text: str) -> int:
    """A non-negative 63-bit integer from ``text`` (blake2b, so nearby inputs are unrelated)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


__all__ = ["stable_hash"]
