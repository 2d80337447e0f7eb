"""Per-sample random streams: every sample's random start, restarts and (Square) proposals come from its own
generator, seeded from (seed, sample index, attack key), so an attack's result on a sample does not depend on
which other samples share its batch, on the batch size, or on how the images are split across processes.

``SampleGenerators`` stands where an attack takes a ``torch.Generator``: the attacks' random helpers
(``advlora.attacks._utils._rand``, Square's ``_signs`` / ``_randint``) see ``per_sample`` and draw row ``b`` of a
(B, ...) tensor from sample ``b``'s stream. Restart ``r`` of a sample is the ``r``-th draw of that stream (a
function of (seed, index, attack key, r)), because every sample of a batch makes the same sequence of draws.
APGD-T's targets, run as a batch dimension, draw from one stream per (sample, target): ``per_target``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from advlora.hashing import stable_hash


def sample_seed(seed: int, index: int, key: str) -> int:
    """A 63-bit seed from (seed, global sample index, attack key): blake2b, so nearby inputs are unrelated."""
    return stable_hash(f"{int(seed)}|{int(index)}|{key}")


class SampleGenerators(torch.Generator):
    """One CPU ``torch.Generator`` per sample of a batch; draws are made row by row (then moved to the
    batch's device), so row ``b`` depends only on sample ``indices[b]``.

    It is itself a CPU ``torch.Generator`` (seeded from the batch's first sample), so an attack that knows
    nothing of per-sample streams still runs, reproducibly, but batch-dependently."""

    per_sample = True

    def __new__(cls, seed: int, indices: Sequence[int] | torch.Tensor, key: str) -> SampleGenerators:
        return super().__new__(cls, "cpu")

    def __init__(self, seed: int, indices: Sequence[int] | torch.Tensor, key: str) -> None:
        super().__init__()
        self.indices = [int(i) for i in indices]
        self.manual_seed(sample_seed(seed, self.indices[0] if self.indices else -1, key))
        self.seed, self.key = int(seed), key
        self.generators = [torch.Generator().manual_seed(sample_seed(seed, i, key)) for i in self.indices]

    def per_target(self, targets: Sequence[int]) -> SampleGenerators:
        """Streams for the batch repeated once per target (target-major: row ``a * B + b`` is sample ``b``
        towards ``targets[a]``), each seeded from (seed, sample index, key, target): a sample's draws towards
        one target do not depend on which other targets share the pass."""
        out = SampleGenerators(self.seed, [], self.key)
        out.indices = [i for _ in targets for i in self.indices]
        out.generators = [torch.Generator().manual_seed(sample_seed(self.seed, i, f"{self.key}#target{int(t)}"))
                          for t in targets for i in self.indices]
        return out

    def _rows(self, shape, fn) -> torch.Tensor:
        shape = tuple(shape)
        if not shape or shape[0] != len(self.generators):
            raise ValueError(f"per-sample draw of shape {shape} for a batch of {len(self.generators)} samples")
        if not self.generators:
            return fn(shape, None)
        return torch.stack([fn(shape[1:], g) for g in self.generators])

    def rand(self, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self._rows(shape, lambda s, g: torch.rand(s, generator=g, dtype=dtype))

    def randn(self, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self._rows(shape, lambda s, g: torch.randn(s, generator=g, dtype=dtype))

    def randint(self, low: int, high: int, shape) -> torch.Tensor:
        return self._rows(shape, lambda s, g: torch.randint(low, high, s, generator=g))


def is_per_sample(generator) -> bool:
    """Whether ``generator`` is a ``SampleGenerators`` (the attacks then keep every draw per sample)."""
    return bool(getattr(generator, "per_sample", False))


__all__ = ["SampleGenerators", "is_per_sample", "sample_seed"]
