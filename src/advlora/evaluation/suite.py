"""Suites and ensembles: the per-sample worst over several image attacks.

A suite (``standard``) runs its members in order and keeps ONE store of the per-sample worst images
(``KeptImages``): after a member, each image whose member row is worse than the kept one replaces it, and the
member's own records are removed, so at most the kept images and the member in flight are on disk. Under early
exit (the default; ``results.PROTOCOL`` says what is kept and what it means for each direction) later members
attack only the images not yet done; under ``exhaustive`` every member attacks every image and the suite keeps
what ``ensemble`` of all members would. The ``ensemble`` entry of an evaluation is the per-sample worst over its
separately run image attacks.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from advlora.attacks import ThreatModel, registry
from advlora.attacks.registry import AttackSpec
from advlora.evaluation import distributed
from advlora.evaluation.images import AdvImages, ImageSource, Picked, write_record
from advlora.evaluation.measure import Ctx, measure, measure_i2t, scores, tie_dtype
from advlora.evaluation.plan import EvalPlan
from advlora.evaluation.results import FEATURE_BATCH, AttackResult, describe, precision_of
from advlora.evaluation.runners import ImageRun, attack_images, result
from advlora.evaluation.sanity import Outcomes
from advlora.evaluation.tasks import task_of
from advlora.io import atomic_write_bytes


class KeptImages(ImageSource):
    """Per sample the image a suite keeps: the clean image until a member writes a row for it. Rows live in
    block records of ``block`` consecutive samples under ``folder`` (``images.write_record``); ``update``
    rewrites only the blocks it touches (each atomically)."""

    def __init__(self, clean: ImageSource, folder: Path, block: int = FEATURE_BATCH, keep: object = None) -> None:
        self.clean, self.folder, self.block, self.keep = clean, Path(folder), int(block), keep
        self.shape = tuple(clean.shape)
        self._cached: tuple[int, torch.Tensor] | None = None

    def _file(self, b: int) -> Path:
        return self.folder / f"{b * self.block:09d}.safetensors"

    def _load(self, b: int) -> torch.Tensor:
        if self._cached is None or self._cached[0] != b:
            f = self._file(b)
            if f.exists():
                with safe_open(str(f), framework="pt") as h:
                    rows = h.get_tensor("adv").float()
            else:
                rows = self.clean.rows(torch.arange(b * self.block, min((b + 1) * self.block, len(self))))
            self._cached = (b, rows)
        return self._cached[1]

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long)
        out = torch.empty((len(idx), *self.item_shape), dtype=torch.float32)
        blocks = idx // self.block
        for b in blocks.unique().tolist():
            sel = (blocks == b).nonzero().squeeze(1)
            out[sel] = self._load(b)[idx[sel] - b * self.block]
        return out

    def update(self, indices: torch.Tensor, source: ImageSource, positions: torch.Tensor) -> None:
        """Samples ``indices`` take ``source``'s rows at ``positions``; one block is held at a time."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        pos = torch.as_tensor(positions, dtype=torch.long)
        blocks = idx // self.block
        self.folder.mkdir(parents=True, exist_ok=True)
        for b in blocks.unique().tolist():
            sel = (blocks == b).nonzero().squeeze(1)
            rows = self._load(b).clone()
            rows[idx[sel] - b * self.block] = source.rows(pos[sel]).to(rows)
            lo = b * self.block
            write_record(self.folder, torch.arange(lo, lo + len(rows)), rows)
            self._cached = (b, rows)


def _suite_key(rank, t2i_mean, loss, n: int) -> torch.Tensor:
    """The exhaustive suite's (and the ensemble's) lexicographic key (i2t rank, mean t2i rank, loss) as one
    float64: ranks and t2i means are exact there."""
    return (rank.float().cpu().double() * (n + 1) + t2i_mean.float().cpu().double()) * 1e3 \
        + loss.float().cpu().double().clamp(-1e2, 1e2) / 1e2


def _t2i_mean(ranks_t2i: torch.Tensor, t2i: torch.Tensor, n: int) -> torch.Tensor:
    counts = torch.bincount(t2i, minlength=n).clamp_min(1).float()
    return torch.zeros(n).index_add(0, t2i, ranks_t2i.float().cpu()) / counts


def _measure_features(ctx: Ctx, feats: torch.Tensor, images: ImageSource) -> dict:
    """``measure`` of images whose features are known (ITC only; ITM re-ranking re-reads the images)."""
    if ctx.rerank_k and ctx.model.has_itm:
        return measure(ctx, images)
    data = ctx.data
    s_i2t, s_t2i, _ = scores(ctx.model, feats, ctx.text_features, images, data.captions, None)
    prec, task = tie_dtype(feats, ctx.text_features), task_of(data)
    return {"ranks": task.ranks(data, s_i2t, s_t2i, tie_dtype=prec),
            "metrics": task.metrics(data, s_i2t, s_t2i, tie_dtype=prec)}


def _remove(adv: AdvImages) -> None:
    """Delete a merged member's records (process 0, once every process has read them)."""
    session = distributed.current()
    session.barrier()
    if session.world()[0] == 0:
        if adv.keep is not None and hasattr(adv.keep, "cleanup"):
            adv.keep.cleanup()
        elif adv.folder.exists():
            shutil.rmtree(adv.folder, ignore_errors=True)
    session.barrier()


class _Keeper:
    """A suite run's per-sample state: what is kept (``kept``, the member index ``member_of``, -1 = clean), its
    key (early exit: i2t ``rank`` and ``loss``; exhaustive: the ``best`` ensemble key), the kept images'
    features, and the resumable record of the merged members (``suite.json`` beside the kept images)."""

    def __init__(self, ctx: Ctx, name: str, exhaustive: bool, exit_k: int) -> None:
        n = len(ctx.data)
        self.ctx, self.exhaustive, self.exit_k, self.n = ctx, exhaustive, exit_k, n
        self.session = distributed.current()
        self.main = self.session.world()[0] == 0
        self.folder, self.keep = self.session.scratch_folder(f"{name}-kept")
        self.kept = KeptImages(ctx.images, self.folder, keep=self.keep)
        self.best = torch.full((n,), float("-inf"), dtype=torch.float64)
        self.rank, self.loss = ctx.clean_ranks[0].cpu().clone(), ctx.clean_loss.double().clone()
        self.member_of = torch.full((n,), -1, dtype=torch.long)
        self.feats = ctx.clean_features.clone()
        f = Path(self.folder) / "suite.json"
        resumed = self.session.state is not None and self.session.resume and f.exists()
        self.state = json.loads(f.read_text()) if resumed else {}
        if self.state.get("merged"):                   # resumed after some members were merged
            self.member_of = torch.tensor(self.state["member_of"], dtype=torch.long)
            self.best = torch.tensor(self.state["best"], dtype=torch.float64)
            self.rank = torch.tensor(self.state["rank"], dtype=torch.long)
            self.loss = torch.tensor(self.state["loss"], dtype=torch.float64)
            self.feats = measure(ctx, self.kept)["features"].to(self.feats).clone()

    def todo(self) -> torch.Tensor | None:
        """The images the next member attacks: all (exhaustive), else those not done."""
        return None if self.exhaustive else (self.rank < self.exit_k).nonzero().squeeze(1)

    def merge(self, i: int, adv: AdvImages, todo: torch.Tensor | None) -> tuple[torch.Tensor, dict | None]:
        """Member ``i``'s images replace the kept ones where worse; returns its per-image i2t ranks over the
        whole set (images it did not attack: their kept rank) and, exhaustive, its own measurement."""
        ctx, n, res = self.ctx, self.n, None
        if self.exhaustive:
            res = measure(ctx, adv)
            key_m = _suite_key(res["ranks"][0], _t2i_mean(res["ranks"][1], ctx.data.txt2img, n), res["loss"], n)
            better = key_m > self.best
            self.best = torch.where(better, key_m, self.best)
            sub, feats, full_ranks = torch.arange(n), res["features"], res["ranks"][0].cpu()
        else:
            r = measure_i2t(ctx, adv, todo)
            better = (r["rank"] > self.rank[todo]) | ((r["rank"] == self.rank[todo])
                                                      & (r["loss"].double() > self.loss[todo]))
            sub, feats = todo, r["features"]
            self.rank[sub[better]] = r["rank"][better]
            self.loss[sub[better]] = r["loss"].double()[better]
            full_ranks = self.rank.clone()
            full_ranks[todo] = r["rank"]
        pos = better.nonzero().squeeze(1)
        if self.main:
            self.kept.update(sub[pos], adv, pos)
        self.session.barrier()
        self.kept = KeptImages(ctx.images, self.folder, keep=self.keep)   # every process reads the blocks written
        self.member_of[sub[pos]] = i
        self.feats[sub[pos]] = feats[pos.to(feats.device)].to(self.feats)
        return full_ranks, res

    def save(self, key: str, entry: AttackResult, full_ranks: torch.Tensor) -> None:
        """Record member ``key`` as merged (a resumed run then skips it); its row holds its checks."""
        if not self.main or self.session.state is None:
            return
        self.state.setdefault("merged", {})[key] = {"entry": entry.to_dict(), "outcome": full_ranks.tolist()}
        self.state.update(member_of=self.member_of.tolist(), rank=self.rank.tolist(), loss=self.loss.tolist(),
                          best=self.best.tolist())
        atomic_write_bytes(Path(self.folder) / "suite.json", json.dumps(self.state).encode())


@dataclass
class SuiteRun:
    """What ``run_suite`` returns: the suite's row (``entry``), its members' rows by key (``<suite>/<member>``),
    what the sanity checks may re-run of each member (``runs``: key -> (spec, threat, objective, options)) and
    the per-image outcome of each member and of the suite (``outcomes``, for the sanity checks)."""

    entry: AttackResult
    outcomes: Outcomes
    rows: dict[str, AttackResult] = field(default_factory=dict)
    runs: dict[str, tuple] = field(default_factory=dict)


def run_suite(ctx: Ctx, spec: AttackSpec, threat: ThreatModel, plan: EvalPlan, *, generator, precision: str = "",
              members=None) -> SuiteRun:
    """Run the members of suite ``spec`` (``members``: instead of its own) under ``plan``, keeping one store of
    the per-sample worst images; the suite's row is measured on the kept images (see the module docstring)."""
    model, k, n = ctx.model, ctx.rerank_k, len(ctx.data)
    exhaustive, exit_k, gallery = plan.exhaustive, plan.exit_k, plan.gallery
    keeper = _Keeper(ctx, spec.name, exhaustive, exit_k)
    done = SuiteRun(None, Outcomes(ctx.clean_ranks[0]))  # type: ignore[arg-type]   # entry: once every member ran
    outcomes = done.outcomes
    labels = []
    for m in (spec.members if members is None else members):
        if m.needs_itm and not (model.has_itm and k):
            continue
        key, mspec, mthreat = f"{spec.name}/{m.label}", registry.get(m.attack), threat.replace(**m.changes)
        mobj, mopts = m.objective or plan.objective, {**plan.options_for(m.attack), **m.options}
        done.runs[key] = (mspec, mthreat, mobj, mopts)
        labels.append(m.label)
        line = describe(m.attack, mthreat, objective=mobj, gallery=gallery, options=mopts) + precision
        line += f" EOT={m.eot}" if m.eot > 1 else ""
        if key in keeper.state.get("merged", {}):     # resumed: this member was merged before the stop
            keeper.session.skip_call()
            saved = keeper.state["merged"][key]
            done.rows[key] = AttackResult(**saved["entry"])
            outcomes.add(key, mspec.kind, torch.tensor(saved["outcome"]))
            continue
        t = time.perf_counter()
        todo = keeper.todo()
        att = attack_images(ctx, mspec, mthreat, plan, generator=generator, objective=mobj, options=mopts,
                            run=ImageRun(key=key, subset=todo, eot=m.eot, done_rank=None if exhaustive else exit_k,
                                         rank_k=exit_k))
        adv = att.images
        full_ranks, res = keeper.merge(len(labels) - 1, adv, todo)
        if exhaustive:
            entry = result(m.attack, ctx, res, line, checks=att.checks)
        else:
            entry = result(m.attack, ctx, _measure_features(ctx, keeper.feats, keeper.kept),
                           line + f" (suite's worst so far; attacked {len(todo)} of {n})",
                           checks=att.checks, attacked=len(todo))
        entry.seconds = round(time.perf_counter() - t, 2)
        done.rows[key] = entry
        outcomes.add(key, mspec.kind, full_ranks)
        keeper.save(key, entry, full_ranks)
        _remove(adv)
    shown = spec if members is None else dataclasses.replace(spec, label=f"{spec.label}-rand", members=members)
    line = shown.line(threat, {}, {"itm": bool(model.has_itm and k)}) + precision
    line += " exhaustive" if exhaustive else f" early-exit(done at i2t rank >= {exit_k})"
    res = measure(ctx, keeper.kept)
    chosen = {"clean": int((keeper.member_of == -1).sum()),
              **{lab: int((keeper.member_of == j).sum()) for j, lab in enumerate(labels)}}
    done.entry = result(spec.name, ctx, res, line, chosen=chosen)
    outcomes.add(spec.name, spec.kind, res["ranks"][0])
    return done


def ensemble(ctx: Ctx, advs: dict, members: list[str], threat: ThreatModel, *, name: str = "ensemble",
             line: str | None = None) -> tuple[AttackResult, torch.Tensor]:
    """Per image, the member attack whose adversarial image ranks its best positive lowest; ties broken by the
    mean text-to-image rank of the image's captions in that attack's run, then by the contrastive loss.

    Image-to-text recall is then at most every member's; text-to-image recall depends on the whole gallery of
    adversarial images, so it is usually, not provably, at most the members'.
    """
    t2i = ctx.data.txt2img
    n = len(ctx.data)
    key = torch.stack([_suite_key(advs[m][1]["ranks"][0], _t2i_mean(advs[m][1]["ranks"][1], t2i, n),
                                  advs[m][1]["loss"], n) for m in members])           # (A, N)
    pick = key.argmax(dim=0)                                                          # (N,)
    adv = Picked([advs[m][0] for m in members], pick)         # per sample the chosen member's row, read lazily
    if line is None:
        line = (f"{threat.norm} eps={threat.eps_text} ensemble(per-sample worst of {', '.join(members)})"
                f" precision={precision_of(ctx.model)}")
    res = measure(ctx, adv)
    entry = result(name, ctx, res, line, chosen={n: int((pick == i).sum()) for i, n in enumerate(members)})
    return entry, res["ranks"][0]


__all__ = ["KeptImages", "SuiteRun", "ensemble", "run_suite"]
