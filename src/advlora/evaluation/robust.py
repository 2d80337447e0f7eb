"""Robust retrieval evaluation: clean and adversarial Recall@k both ways, attack success rates, the threat
model beside every number, and the sanity checks of ``advlora.evaluation.sanity``.

``evaluate_robust`` runs each requested attack with the runner of its kind (``runners``; suites and the
ensemble: ``suite``), measures it (``measure``), writes its typed row (``results.AttackResult``) and finally
runs the sanity checks through a probe (``probes``). The protocol, recorded in every result under
"protocol", is ``results.PROTOCOL``.
"""
from __future__ import annotations

import time

import torch

from advlora.attacks import ThreatModel, attack_mode, image_objectives, registry
from advlora.data.dataset import RetrievalDataset
from advlora.errors import AdvloraError
from advlora.evaluation import distributed
from advlora.evaluation.measure import Ctx, context, measure
from advlora.evaluation.plan import EvalPlan
from advlora.evaluation.probes import Randomness, check_randomized, is_randomized, probe
from advlora.evaluation.results import PROTOCOL, AttackResult, describe, eval_attacks, limit_indices, precision_of
from advlora.evaluation.retrieval import check_rerank_k, default_rerank_k
from advlora.evaluation.runners import ImageRun, attack_images, joint, result, text_captions
from advlora.evaluation.sanity import Outcomes, check_mode_restored, run_checks, verdict, white_box_reference
from advlora.evaluation.suite import ensemble, run_suite
from advlora.evaluation.tasks import exit_rank, task_of
from advlora.models.video import for_dataset


def evaluate_robust(model, dataset: RetrievalDataset, attacks: list[str] | str, threat: ThreatModel,
                    plan: EvalPlan | None = None, *, generator: torch.Generator | None = None, surrogate=None,
                    **settings) -> dict:
    """Clean and robust retrieval of ``model`` on ``dataset`` under each attack of ``attacks``.

    Args:
        attacks: registered attack names (``advlora.attacks.registry``; a list or a comma string).
        threat: the budget shared by all attacks (each reads the fields its declaration lists).
        plan: how the attacks run (``EvalPlan``: objective, gallery, each attack's options, the suite's mode and
            exit rank, the data limits, the re-rank depth, ensemble and sanity); or its fields as ``settings``
            (``evaluate_robust(..., objective="margin", exit_k=1)``), validated the same way.
        generator: seeds the attacks (default: ``threat.generator()``).
        surrogate: the surrogate model of the transfer attacks.
    Returns:
        ``{"clean", "attacks": {name: AttackResult}, "ensemble": AttackResult, "sanity": [Check], "protocol",
        ...}``; metric values in percent. Under early exit an image is done once its best positive caption ranks
        at or beyond ``plan.exit_k``, lowered to the largest reported k the set lets an image miss
        (``tasks.exit_rank``; recorded as "suite_exit_k"); recalls at a k above it are upper bounds of the
        exhaustive suite's.

    Memory: the clean images are held as uint8 and made floats per batch; each attack's adversarial images are
    the session's per-batch records on disk (``advlora.evaluation.distributed``), read back batch by batch; only
    per-sample values (features, ranks, losses, check values) are held for the whole set.
    """
    plan = EvalPlan.of(plan, **settings)
    names = _check_args(model, dataset, attacks, plan.objective, threat)
    generator = threat.generator() if generator is None else generator
    model = for_dataset(model, dataset)  # video sets (N, F, 3, H, W): frame pooling, same contract
    surrogate = None if surrogate is None else for_dataset(surrogate, dataset)
    k = default_rerank_k(model, len(dataset)) if plan.rerank_k == -1 else check_rerank_k(plan.rerank_k)
    was_training = model.training
    exit_k = exit_rank(dataset, plan.exit_k)
    t0 = time.perf_counter()
    run = _Run(dataset, threat, names, plan.replace(exit_k=exit_k), generator, surrogate,
               f" precision={precision_of(model)}"
               + ("" if plan.logit_scale is None else f" logits={plan.logit_scale:g}*cos"))
    with attack_mode(model):
        ctx = context(model, dataset, k, plan.logit_scale)
        run.ctx, run.scopes = ctx, {"full": Outcomes(ctx.clean_ranks[0])}
        out: dict = {"clean": ctx.clean, "n_images": len(dataset), "n_texts": len(dataset.captions),
                     "eps": float(threat.eps), "eps_str": threat.eps_text, "norm": threat.norm,
                     "objective": plan.objective, "gallery": plan.gallery, "rerank_k": k, "attacks": {},
                     "logit_scale": float(torch.as_tensor(model.logit_scale).detach() if plan.logit_scale is None
                                          else plan.logit_scale),
                     "suite_mode": "exhaustive" if plan.exhaustive else "early-exit", "protocol": PROTOCOL.strip()}
        if not plan.exhaustive:
            out["suite_exit_k"] = exit_k
        run.out = out
        sel = torch.arange(min(len(dataset), plan.batch_size))     # AutoAttack's check: calls on one batch
        run.randomized = is_randomized(model, ctx.images.rows(sel).to(model.device), ctx.text_features)
        for name in names:
            t = time.perf_counter()
            entry = run.one(name)
            entry.seconds = round(time.perf_counter() - t, 2)
            out["attacks"][name] = entry
        if plan.ensemble:
            members = [n for n in run.advs
                       if "/" not in n and (registry.get(n).kind != "transfer" or surrogate is not None)]
            if members:
                out["ensemble"] = ensemble(ctx, run.advs, members, threat)[0]
        if plan.sanity:
            out["sanity"] = run.checks(probe(model, dataset, k, run.plan, run.runs))
    distributed.current().barrier()   # no process returns (and replaces the state folder) while another reads it
    if plan.sanity:
        out["sanity"].append(check_mode_restored(model, was_training))
        out["verdict"] = verdict(out["sanity"])
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _check_args(model, dataset: RetrievalDataset, attacks, objective: str, threat: ThreatModel) -> list[str]:
    """The attack names, after refusing what cannot run (one ``AdvloraError`` line each)."""
    names = registry.check_names(attacks)
    registry.check_norm(names, threat.norm)
    if image_objectives.get(objective).needs_itm and not model.has_itm:
        raise AdvloraError(f"objective {objective!r} needs a model with an ITM head (BLIP)")
    if len(dataset) == 0:
        raise AdvloraError("the data set is empty")
    return names


def _rand_eot() -> int:
    return max([m.eot for s in registry.specs("suite") for m in s.rand_members] or [1])


class _Run:
    """One ``evaluate_robust`` call's state while its attacks run: each ``one(name)`` dispatches on the
    attack's kind and returns its row."""

    def __init__(self, dataset, threat, names, plan: EvalPlan, generator, surrogate, precision) -> None:
        self.dataset, self.threat, self.names, self.plan = dataset, threat, names, plan
        self.generator, self.surrogate, self.precision = generator, surrogate, precision
        self.ctx: Ctx | None = None
        self.sub_ctx: Ctx | None = None
        self.out: dict = {}
        self.scopes: dict = {}
        self.advs: dict = {}          # image attack -> (adversarial images, measurement): the ensemble's input
        self.runs: dict = {}          # key -> (spec, threat, objective, options): what the checks re-run
        self.randomized: Randomness | None = None

    def checks(self, p) -> list:
        """The sanity checks of this run (``sanity.run_checks``) through probe ``p``, and the randomized-model
        check."""
        checks = {name: e.checks for name, e in self.out["attacks"].items() if e.checks}
        out = run_checks(self.threat, self.out, ctx_checks=checks, probe=p, outcomes=self.scopes,
                         chance=task_of(self.dataset).chance(self.dataset))
        if self.randomized is not None:
            out.append(check_randomized(self.randomized, _rand_eot()))
        return out

    def line(self, name: str) -> str:
        plan = self.plan
        return describe(name, self.threat, objective=plan.objective, gallery=plan.gallery,
                        options=plan.options_for(name)) + self.precision

    def one(self, name: str) -> AttackResult:
        spec = registry.get(name)
        if spec.kind == "suite":
            return self.suite(spec)
        if spec.kind == "black-box" and limit_indices(len(self.dataset), self.plan.square_limit) is not None:
            return self.black_box_subset(spec)
        if spec.kind == "text":
            caps = text_captions(self.ctx, spec, self.threat, self.generator, self.plan.options_for(name))
            return result(name, self.ctx, measure(self.ctx, self.ctx.images, caps), self.line(name),
                          examples=[[a, b] for a, b in zip(self.dataset.captions, caps) if a != b][:5])
        if spec.kind == "joint":
            adv, caps = joint(self.ctx, spec, self.threat, self.generator, self.plan.batch_size,
                              self.plan.options_for(name))
            return result(name, self.ctx, measure(self.ctx, adv, caps), self.line(name))
        att = attack_images(self.ctx, spec, self.threat, self.plan, generator=self.generator,
                            run=ImageRun(surrogate=self.surrogate))
        res = measure(self.ctx, att.images)
        self.advs[name] = (att.images, res)
        if spec.kind != "transfer":
            self.runs[name] = (spec, self.threat, self.plan.objective, self.plan.options_for(name))
        self.scopes["full"].add(name, spec.kind, res["ranks"][0])
        return result(name, self.ctx, res, self.line(name), checks=att.checks)

    def suite(self, spec) -> AttackResult:
        rand = self.randomized is not None and self.randomized.randomized and spec.rand_members
        done = run_suite(self.ctx, spec, self.threat, self.plan, generator=self.generator, precision=self.precision,
                         members=spec.rand_members if rand else None)
        self.out["attacks"].update(done.rows)
        self.runs.update(done.runs)
        self.scopes["full"].update(done.outcomes)
        return done.entry

    def black_box_subset(self, spec) -> AttackResult:
        """A black-box attack on ``square_limit`` images, with a white-box reference on the same images."""
        ds = self.dataset
        if self.sub_ctx is None:
            self.sub_ctx = context(self.ctx.model, ds.subset(limit_indices(len(ds), self.plan.square_limit)),
                                   self.ctx.rerank_k)
            self.scopes["subset"] = Outcomes(self.sub_ctx.clean_ranks[0])
        sub = self.sub_ctx
        att = attack_images(sub, spec, self.threat, self.plan, generator=self.generator)
        res = measure(sub, att.images)
        entry = result(spec.name, sub, res, self.line(spec.name), checks=att.checks,
                       subset=f"{len(sub.data)} of {len(ds)} images (--square-limit)")
        self.scopes["subset"].add(spec.name, spec.kind, res["ranks"][0])
        wb = white_box_reference(self.names)
        if wb is not None:  # the gradient-masking checks need a white-box number on the same images
            with distributed.labelled(f"white-box reference on the {spec.name} subset"):
                wb_adv = attack_images(sub, registry.get(wb), self.threat, self.plan,
                                       generator=self.generator).images
            wb_res = measure(sub, wb_adv)
            entry.whitebox_on_subset = {"attack": wb, "metrics": wb_res["metrics"]}
            self.scopes["subset"].add(wb, registry.get(wb).kind, wb_res["ranks"][0])
        return entry


__all__ = ["PROTOCOL", "AttackResult", "EvalPlan", "describe", "eval_attacks", "evaluate_robust", "limit_indices",
           "precision_of"]
