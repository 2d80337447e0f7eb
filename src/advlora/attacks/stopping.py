"""Stop attacking what is done: an objective wrapper that queries the model only for the rows of a batch whose
worst retrieval outcome so far is below a rank (``done_rank``), as AutoAttack attacks only the points still
classified correctly.

``stop_at_rank(objective, done_rank)`` wraps a ``RankedObjective`` (or a targeted family, ``TargetedDLR``).
Each call computes the objective on the rows still to do alone (``RankedObjective.select``: a smaller
batch, so the forward and backward cost only those rows) and returns, for the rows done, loss ``-inf`` and
outcome rank ``-1``: an attack's own bookkeeping (``_utils.WorstCase``, APGD's step control, Square's search)
then never replaces their kept point, and gradient steps leave them where they are. A row is done once any
call reported its rank at or beyond ``done_rank`` (the clean image's outcome counts); the rows of one image
under several targets (APGD-T's targets as a batch dimension) share that state, so a target that breaks an
image stops the others. ``finished`` is true once every row is done (the attacks then end early).

For every row not done, the objective's value and outcome are those of the wrapped objective: which rows are
queried does not change the others' (each row's random stream is its own), so an image's outcome is that of
the full attack until the step it becomes done, and done it stays. Threat model and budget are the
attack's; only queries that cannot change a metric reported up to ``done_rank`` are skipped.

The rank that decides "done" (and the worst point an attack keeps) must be the rank the metrics report. Where
the objective's own rank is not (BLIP: the metrics rank ITC re-ranked by ITM), ``report_rank(objective,
rank_of)`` makes the objective report ``rank_of``'s rank, and ``stop_at_rank`` wraps that.
"""
from __future__ import annotations

import torch

from advlora.attacks.attack_objective import AttackObjective, TargetFamily, Wrapper, as_objective
from advlora.errors import AdvloraError


class _State:
    """Per image: the highest outcome rank any call reported (-1: none yet)."""

    def __init__(self, n: int | None = None) -> None:
        self.seen = None if n is None else torch.full((n,), -1, dtype=torch.long)

    def note(self, images: torch.Tensor, rank: torch.Tensor) -> None:
        rank = rank.detach().to("cpu", torch.long)
        images = images.to("cpu")
        if self.seen is None:
            self.seen = torch.full((int(images.max()) + 1,), -1, dtype=torch.long)
        self.seen.scatter_reduce_(0, images, rank, reduce="amax")

    def all_done(self, done_rank: int) -> bool:
        return self.seen is not None and bool((self.seen >= done_rank).all())


class StopAtRank(Wrapper):
    """``objective`` called on the rows whose image is not done (see the module docstring); it reports its own
    outcome (the done rows' -1) and cannot itself be restricted to rows."""

    ranked = True
    last_rank = None
    selectable = False

    def __init__(self, objective, done_rank: int, state: _State | None = None,
                 image_of: torch.Tensor | None = None) -> None:
        super().__init__(objective)
        if not self.inner.selectable:
            raise AdvloraError("stop_at_rank needs an objective that can be restricted to rows (RankedObjective)")
        self.objective, self.done_rank = self.inner, int(done_rank)
        self.state = _State() if state is None else state
        self.image_of = image_of
        if self.clean_outcome is not None:
            self.state.note(self._images(len(self.clean_outcome[1])), self.clean_outcome[1])

    def _images(self, n: int) -> torch.Tensor:
        return torch.arange(n) if self.image_of is None else self.image_of[:n]

    def todo(self, n: int) -> torch.Tensor:
        """(n,) bool: the rows still to attack."""
        images = self._images(n)
        if self.state.seen is None or len(self.state.seen) <= int(images.max()):
            return torch.ones(n, dtype=torch.bool)
        return self.state.seen[images] < self.done_rank

    @property
    def finished(self) -> bool:
        """Every image of the batch is done (known only once the clean outcome or a first call was seen)."""
        return self.state.all_done(self.done_rank)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        todo = self.todo(n)
        if bool(todo.all()):
            loss = self.objective(x)
            rank = self.objective.last_rank
        else:
            # the rows done: a constant -inf (no gradient reaches their pixels), outcome -1 (never kept)
            loss = torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype)
            rank = torch.full((n,), -1, dtype=torch.long, device=x.device)
            rows = todo.nonzero().squeeze(1).to(x.device)
            if len(rows):
                sub = self.objective.select(rows)
                loss = loss.index_put((rows,), sub(x[rows]).to(loss.dtype))
                rank[rows] = sub.last_rank.to(rank)
            elif x.requires_grad:                 # nothing to do: a graph all the same, of zero gradient
                loss = loss + 0 * x.reshape(n, -1)[:, 0]
        self.state.note(self._images(n), rank)
        self.last_rank = rank
        return loss


class StopFamily(TargetFamily):
    """A targeted family (``target(j)``, ``targets_of(js)``, ``n_targets``) whose objectives stop at
    ``done_rank``, one state per image shared by all its targets."""

    def __init__(self, family, done_rank: int) -> None:
        self.family, self.done_rank = family, int(done_rank)
        self.n_targets = family.n_targets
        self.state = _State()

    def target(self, j: int) -> StopAtRank:
        return StopAtRank(self.family.target(j), self.done_rank, self.state)

    def targets_of(self, js) -> StopAtRank:
        js = list(js)
        obj = self.family.targets_of(js)
        b = len(obj.clean_outcome[1]) // max(len(js), 1) if obj.clean_outcome is not None else None
        image_of = None if b is None else torch.arange(b).repeat(len(js))
        return StopAtRank(obj, self.done_rank, self.state, image_of)

    @property
    def finished(self) -> bool:
        return self.state.all_done(self.done_rank)


class ReportedRank(Wrapper):
    """``objective`` whose outcome (``last_rank``) is the rank the metrics report, ``rank_of(x, rows)``, instead of
    the rank among the objective's own scores: a model whose reported rank is not the objective's (BLIP, whose
    reported rank is ITC re-ranked by ITM) then has its images done (``StopAtRank``) and its worst points kept
    (``_utils.WorstCase``) by the reported rank. ``rows`` (n,) maps each row of a call to its image in the batch
    the objective was built for; ``clean_rank`` (that batch's reported ranks at the clean images), when given,
    is the rank of the clean outcome. The loss and its gradient are the objective's."""

    ranked = True
    last_rank = None
    clean_outcome = None

    def __init__(self, objective, rank_of, clean_rank: torch.Tensor | None = None,
                 rows: torch.Tensor | None = None) -> None:
        super().__init__(objective)
        self.objective, self.rank_of, self.clean_rank, self.rows = self.inner, rank_of, clean_rank, rows
        inner = self.inner.clean_outcome
        if inner is not None and clean_rank is not None:
            self.clean_outcome = (inner[0], clean_rank[self._rows(len(inner[0])).to(clean_rank.device)]
                                  .to(inner[1]))

    def _rows(self, n: int) -> torch.Tensor:
        return torch.arange(n) if self.rows is None else self.rows[:n]

    def select(self, rows: torch.Tensor) -> ReportedRank:
        rows = torch.as_tensor(rows, dtype=torch.long).cpu()
        return ReportedRank(self.objective.select(rows), self.rank_of, self.clean_rank,
                            rows if self.rows is None else self.rows[rows])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        loss = self.objective(x)
        self.last_rank = self.rank_of(x.detach(), self._rows(x.shape[0])).to(loss.device)
        return loss


class ReportedFamily(TargetFamily):
    """A targeted family whose objectives report ``rank_of``'s rank (``ReportedRank``)."""

    def __init__(self, family, rank_of, clean_rank: torch.Tensor | None = None) -> None:
        self.family, self.rank_of, self.clean_rank = family, rank_of, clean_rank
        self.n_targets = family.n_targets

    def target(self, j: int) -> ReportedRank:
        return ReportedRank(self.family.target(j), self.rank_of, self.clean_rank)

    def targets_of(self, js) -> ReportedRank:
        js = list(js)
        obj = self.family.targets_of(js)
        b = len(self.clean_rank) if self.clean_rank is not None else len(obj.clean_outcome[1]) // max(len(js), 1)
        return ReportedRank(obj, self.rank_of, self.clean_rank, torch.arange(b).repeat(len(js)))


def report_rank(objective, rank_of, clean_rank: torch.Tensor | None = None):
    """``objective`` (or a targeted family) reporting ``rank_of``'s rank as its outcome (``ReportedRank``);
    unchanged when it reports no outcome (there is nothing to replace: it neither stops nor keeps by rank)."""
    if isinstance(objective, TargetFamily):
        return ReportedFamily(objective, rank_of, clean_rank)
    if not as_objective(objective).ranked:
        return objective
    return ReportedRank(objective, rank_of, clean_rank)


def can_stop(objective) -> bool:
    """Whether ``stop_at_rank`` applies: an objective restrictable to rows, or a family of them."""
    return isinstance(objective, TargetFamily) or as_objective(objective).selectable


def stop_at_rank(objective, done_rank: int | None):
    """``objective`` (or a targeted family) that stops querying each image once it is done at ``done_rank``;
    unchanged when ``done_rank`` is None or the objective reports no outcome it could stop on."""
    if done_rank is None or not can_stop(objective):
        return objective
    if isinstance(objective, TargetFamily):
        return StopFamily(objective, done_rank)
    return StopAtRank(objective, done_rank)


def finished(objective) -> bool:
    """Whether an attack on ``objective`` can end: every row is done (``StopAtRank.finished``)."""
    return bool(objective.finished) if isinstance(objective, (AttackObjective, TargetFamily)) else False


__all__ = ["ReportedFamily", "ReportedRank", "StopAtRank", "StopFamily", "can_stop", "finished", "report_rank",
           "stop_at_rank"]
