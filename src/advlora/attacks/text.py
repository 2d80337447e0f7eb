"""A character-level text attack: greedy edits (swap, insert, delete, substitute) within an edit budget.

In the spirit of DeepWordBug / TextBugger's character operations (Gao et al. 2018, arXiv 1801.04354), greedy on
a score: at each round every caption gets ``candidates`` random one-edit variants of its current version, all
scored in one batch by the objective; a caption keeps its best variant when it raises the objective, and
stops when none does. Threat model: at most ``budget`` character edits per caption (each operation counts
one; a swap of two adjacent characters counts one). No gradient is used.
Objective: ``objective(texts: list[str], rows: Tensor[long]) -> Tensor[len(texts)]`` to maximise, where
``rows[i]`` says which original caption ``texts[i]`` is a version of (see ``objectives.text_contrastive``).
"""
from __future__ import annotations

import random
import string
from collections.abc import Callable

import torch

from advlora.attacks.registry import AttackSpec, register
from advlora.errors import AdvloraError, choices_error

OPERATIONS = ("swap", "insert", "delete", "substitute")
ALPHABET = string.ascii_lowercase
TextObjective = Callable[[list, torch.Tensor], torch.Tensor]


def edit(text: str, op: str, rng: random.Random) -> str:
    """One random character edit of ``text`` (letters only are touched; words keep their spaces)."""
    letters = [i for i, ch in enumerate(text) if ch.isalnum()]
    if not letters:
        return text
    i = rng.choice(letters)
    if op == "swap":
        if i + 1 < len(text) and text[i + 1].isalnum() and text[i + 1] != text[i]:
            return text[:i] + text[i + 1] + text[i] + text[i + 2:]
        op = "substitute"
    if op == "insert":
        return text[:i] + rng.choice(ALPHABET) + text[i:]
    if op == "delete":
        return text[:i] + text[i + 1:] if len(text) > 1 else text
    ch = rng.choice([c for c in ALPHABET if c != text[i].lower()])
    return text[:i] + ch + text[i + 1:]


def text_attack(objective: TextObjective, captions: list[str], *, budget: int = 3, candidates: int = 16,
                operations: tuple[str, ...] = OPERATIONS, rows: torch.Tensor | None = None,
                generator: torch.Generator | None = None, batch_size: int = 512) -> list[str]:
    """Greedy character-level attack; returns the adversarial captions (same order and count).

    Args:
        objective: ``objective(texts, rows) -> Tensor[len(texts)]`` to maximise.
        captions: the clean captions.
        budget: maximal number of character edits per caption (>= 0; 0 returns the captions unchanged).
        candidates: random one-edit variants scored per caption and round.
        operations: the allowed edits among swap, insert, delete, substitute.
        rows: the row of each caption for the objective (default 0..N-1).
        generator: seeds the edits (a ``torch.Generator``); None -> seed 0.
    """
    if isinstance(budget, bool) or int(budget) != budget or budget < 0:
        raise AdvloraError(f"text edit budget must be an integer >= 0, got {budget!r}")
    if candidates < 1:
        raise AdvloraError(f"text candidates must be >= 1, got {candidates!r}")
    for op in operations:
        if op not in OPERATIONS:
            raise choices_error("text operation", op, OPERATIONS)
    n = len(captions)
    rows = torch.arange(n) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    seed = 0 if generator is None else int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
    rng = random.Random(seed)
    current = list(captions)
    with torch.no_grad():
        score = _score(objective, current, rows, batch_size)
        active = list(range(n))
        for _ in range(int(budget)):
            if not active:
                break
            variants, owner = [], []
            for j in active:
                for _ in range(candidates):
                    variants.append(edit(current[j], rng.choice(operations), rng))
                    owner.append(j)
            owner_t = torch.tensor(owner, dtype=torch.long)
            s = _score(objective, variants, rows[owner_t], batch_size)
            still = []
            for a, j in enumerate(active):
                block = s[a * candidates:(a + 1) * candidates]
                b = int(block.argmax())
                if block[b] > score[j]:
                    score[j] = block[b]
                    current[j] = variants[a * candidates + b]
                    still.append(j)
            active = still
    return current


def _score(objective: TextObjective, texts: list[str], rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = [objective(texts[i:i + batch_size], rows[i:i + batch_size]).detach().float().cpu()
           for i in range(0, len(texts), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def _run(objective: TextObjective, captions: list[str], threat, *, generator: torch.Generator | None = None,
         text_budget: int = 3) -> list[str]:
    return text_attack(objective, captions, budget=text_budget, generator=generator)


def _line(threat, options: dict, context: dict) -> str:
    return f"text char-edits<={options['text_budget']} greedy objective=text-contrastive"


SPEC = register(AttackSpec("text", "text", _run, uses=("seed",), label="text", options={"text_budget": 3},
                           describe=_line))
