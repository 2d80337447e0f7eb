"""The evaluation sweep: one model over data sets x threat models x attacks, as one typed result.

``evaluate_sweep(model, datasets, threats, settings)`` runs ``evaluate_robust`` for every (data set, threat
model) pair (clean only when no attack is named), keys each attack's result ``attack@eps``, adds the cross-eps
check (robust r_mean non-increasing over eps) and returns a ``Sweep``: ``Sweep.metrics()`` is what a run
folder's ``metrics.json`` holds, ``result_records`` the per-(data set, threat model) results files
(docs/evaluation.md, "Results files"), ``transfer_rows`` the rows of the transfer table (each set clean and
robust, the change from a baseline model, whether the adapter was trained on it). ``advlora eval``,
``advlora attack``, the experiments and training validation call it.

Retrieval and classification sets are evaluated alike (``advlora.evaluation.tasks``); on a classification set
the scores are ITC only (no ITM re-ranking) and only image attacks apply.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advlora.attacks import ThreatModel, image_objectives, registry, result_key
from advlora.config import load_yaml
from advlora.data.dataset import RetrievalDataset
from advlora.errors import AdvloraError
from advlora.evaluation.plan import EvalPlan, check_attack_options
from advlora.evaluation.protocols import record as protocol_record
from advlora.evaluation.results import check_exit_k
from advlora.evaluation.retrieval import evaluate_clean
from advlora.evaluation.robust import AttackResult, evaluate_robust
from advlora.evaluation.sanity import Check, check_monotone, verdict
from advlora.evaluation.tasks import task_name
from advlora.hashing import stable_hash

#: the version of the results-file schema (docs/evaluation.md, "Results files")
RESULTS_SCHEMA = "advlora.results/1"
#: per task: the metric a table leads with
HEADLINE = {"retrieval": "r_mean", "classification": "top1"}


@dataclass
class SweepSettings:
    """The evaluation settings every (data set, threat model) cell shares (``evaluate_robust``'s arguments)."""

    attacks: list[str] = field(default_factory=list)
    rerank_k: int | None = -1
    batch_size: int = 64
    square_limit: int | None = None
    square_queries: int = 1000
    ensemble: bool = False
    #: seeds the attacks' random draws (None: each threat model's own seed)
    seed: int | None = None
    objective: str = "contrastive"
    gallery: str = "full"
    text_budget: int = 3
    sanity: bool = True
    sanity_limit: int = 64
    options: dict | None = None
    #: options of one attack, ``{"apgd-t": {"targets": 3}}`` (``--attack-option apgd-t.targets=3``)
    attack_options: dict = field(default_factory=dict)
    #: every suite member on every image (no early exit; ``docs/evaluation.md``)
    exhaustive: bool = False
    #: early exit: the i2t rank at which an image is done (None: the largest reported k; ``results.check_exit_k``)
    exit_k: int | None = None
    #: the cross-entropy objective attacks this x cosine (None: the model's logit scale; ``evaluate_robust``)
    logit_scale: float | None = None
    #: the protocol followed, as results files record it (``advlora.evaluation.protocols.record``: its name,
    #: ``custom`` without one, its settings and the user's overrides)
    protocol: dict = field(default_factory=lambda: protocol_record(None))

    def __post_init__(self) -> None:
        self.attacks = registry.check_names(self.attacks)
        self.exit_k = check_exit_k(self.exit_k)
        if self.square_limit is not None and self.square_limit < 1:
            raise AdvloraError(f"--square-limit must be >= 1, got {self.square_limit}")
        if self.square_queries < 1:
            raise AdvloraError(f"--square-queries must be >= 1, got {self.square_queries}")
        if self.logit_scale is not None and not self.logit_scale > 0:
            raise AdvloraError(f"--logit-scale must be > 0, got {self.logit_scale}")
        self.attack_options = check_attack_options(self.attack_options)

    def plan(self, rerank_k: int | None = None) -> EvalPlan:
        """The ``EvalPlan`` of every cell (``rerank_k``: the data set's re-rank depth, default the settings')."""
        return EvalPlan(rerank_k=self.rerank_k if rerank_k is None else rerank_k, batch_size=self.batch_size,
                        square_limit=self.square_limit, square_queries=self.square_queries,
                        text_budget=self.text_budget, ensemble=self.ensemble, objective=self.objective,
                        gallery=self.gallery, sanity=self.sanity, sanity_limit=self.sanity_limit,
                        options=self.options or {}, attack_options=self.attack_options,
                        exhaustive=self.exhaustive, exit_k=self.exit_k,
                        logit_scale=self.logit_scale)


@dataclass
class DataResult:
    """One data set under every threat model: clean metrics, ``attack@eps`` -> ``AttackResult``, the checks."""

    spec: str                      # the --data value
    name: str                      # the data set's own name (``emoji-downstream-test``)
    task: str
    split: str
    n_images: int
    n_texts: int
    clean: dict
    kind: str = "image"
    robust: dict[str, AttackResult] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)     # evaluate_robust's result per threat model
    threats: list[ThreatModel] = field(default_factory=list)
    sanity: list[Check] = field(default_factory=list)
    protocol: str | None = None
    seconds: float = 0.0

    @property
    def verdict(self) -> str | None:
        return verdict(self.sanity) if self.sanity else None

    @property
    def headline(self) -> str:
        return HEADLINE[self.task]

    def worst(self, eps_str: str | None = None) -> tuple[str, AttackResult] | None:
        """The attack with the lowest headline metric on the full set (at ``eps_str``; None: any eps)."""
        full = {k: r for k, r in self.robust.items() if r.subset is None
                and (eps_str is None or registry.split_key(k)[1] == eps_str)}
        if not full:
            return None
        key = min(full, key=lambda k: full[k].metrics.get(self.headline, float("inf")))
        return key, full[key]

    def metrics_json(self, model: str | None, adapter: str | None) -> dict[str, Any]:
        """The ``metrics.json`` of one data set (the schema ``advlora attack`` and ``advlora eval`` write)."""
        return {"clean": self.clean, "n_images": self.n_images, "n_texts": self.n_texts, "data": self.name,
                "task": self.task, "model": model, "adapter": adapter, "robust": dict(self.robust),
                "sanity": self.sanity, "verdict": self.verdict, "protocol": self.protocol,
                "runs": [{k: v for k, v in r.items() if k != "protocol"} for r in self.runs]}


@dataclass
class Sweep:
    """A model (and adapter) over data sets x threat models: one ``DataResult`` per data set, in order."""

    model: str | None
    adapter: str | None
    results: list[DataResult]
    settings: SweepSettings

    def __getitem__(self, spec: str) -> DataResult:
        for r in self.results:
            if r.spec == spec:
                return r
        raise KeyError(spec)

    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: one data set's schema as it is; several: ``{"model", "adapter", "datasets": {spec:
        that schema}}``."""
        if len(self.results) == 1:
            return self.results[0].metrics_json(self.model, self.adapter)
        return {"model": self.model, "adapter": self.adapter,
                "datasets": {r.spec: r.metrics_json(self.model, self.adapter) for r in self.results}}


def _check_task(data: RetrievalDataset, settings: SweepSettings) -> None:
    if task_name(data) != "classification":
        return
    wrong = [a for a in settings.attacks if not registry.get(a).perturbs_images or registry.get(a).kind == "joint"]
    if wrong:
        raise AdvloraError(f"{data.name}: a classification set takes image attacks only, not {', '.join(wrong)}")
    if image_objectives.get(settings.objective).needs_itm:
        raise AdvloraError(f"{data.name}: objective {settings.objective!r} re-ranks captions; a classification "
                           "set is scored by its class embeddings (contrastive, margin, embedding)")


def evaluate_data(model, data: RetrievalDataset, threats: Sequence[ThreatModel], settings: SweepSettings, *,
                  spec: str | None = None, split: str = "test", surrogate=None) -> DataResult:
    """One data set under every threat model of ``threats`` (clean only when ``settings.attacks`` is empty)."""
    _check_task(data, settings)
    task = task_name(data)
    rerank_k = 0 if task == "classification" else settings.rerank_k
    t0 = time.perf_counter()
    out = DataResult(spec or data.name, data.name, task, split, len(data), len(data.captions), {}, data.kind,
                     threats=list(threats))
    if not settings.attacks:
        if task == "retrieval":
            out.clean = evaluate_clean(model, data, batch_size=settings.batch_size, rerank_k=rerank_k)
        else:
            out.clean = evaluate_robust(model, data, [], threats[0] if threats else ThreatModel(),
                                        rerank_k=0, sanity=False)["clean"]
        out.seconds = round(time.perf_counter() - t0, 2)
        return out
    plan = settings.plan(rerank_k)
    for th in threats:
        gen = None if settings.seed is None else torch.Generator().manual_seed(settings.seed)
        res = evaluate_robust(model, data, settings.attacks, th, plan, generator=gen, surrogate=surrogate)
        out.runs.append(res)
        for name, entry in res["attacks"].items():
            out.robust[result_key(name, res["eps_str"])] = entry
        if "ensemble" in res:
            out.robust[result_key("ensemble", res["eps_str"])] = res["ensemble"]
        tagged = [c.prefixed(f"[eps {res['eps_str']}] ") for c in res.get("sanity", [])]
        out.sanity += [c for c in tagged if c not in out.sanity]
    out.clean, out.protocol = out.runs[0]["clean"], out.runs[0]["protocol"]
    if settings.sanity and len(out.runs) > 1:
        first = out.runs[0]["attacks"]
        for name in first:
            spec_ = registry.find(first[name].attack)
            if spec_ is not None and spec_.perturbs_images:
                out.sanity.append(check_monotone([(r["eps"], r["attacks"][name]["metrics"]["r_mean"])
                                                  for r in out.runs], name, out.runs[0]["norm"]))
    out.seconds = round(time.perf_counter() - t0, 2)
    return out


def evaluate_sweep(model, datasets: Sequence[tuple[str, RetrievalDataset]] | RetrievalDataset,
                   threats: Sequence[ThreatModel], settings: SweepSettings, *, model_id: str | None = None,
                   adapter: str | None = None, split: str = "test", surrogate=None) -> Sweep:
    """``model`` on every data set of ``datasets`` ((spec, data set) pairs, or one data set) under every threat
    model of ``threats`` with ``settings``; ``model_id`` and ``adapter`` name what was evaluated."""
    if isinstance(datasets, RetrievalDataset):
        datasets = [(datasets.name, datasets)]
    if settings.attacks and not threats:
        raise AdvloraError("attacks need at least one threat model (--eps)")
    results = [evaluate_data(model, data, threats, settings, spec=spec, split=split, surrogate=surrogate)
               for spec, data in datasets]
    return Sweep(model_id, adapter, results, settings)


# ---- where an adapter came from ---------------------------------------------------------------------------
def adapter_provenance(adapter: str | Path | None) -> dict[str, Any]:
    """What the adapter's training run config says: ``method``, ``objective`` (the training loss), the training
    attack, and ``trained_on`` (the data sets it was adapted on); empty fields when there is no run config
    (an adapter folder's parent or the folder itself holding ``config.yaml``)."""
    out: dict[str, Any] = {"method": "frozen" if adapter is None else None, "objective": None,
                           "train_attack": None, "trained_on": []}
    if adapter is None:
        return out
    folder = Path(adapter)
    conf = next((load_yaml(p) for p in (folder / "config.yaml", folder.parent / "config.yaml") if p.is_file()), None)
    meta = folder / "advlora.json"
    if meta.is_file():
        try:
            out["method"] = json.loads(meta.read_text()).get("method")
        except ValueError:
            pass
    if not isinstance(conf, dict):
        return out
    data, attack, train = conf.get("data") or {}, conf.get("attack") or {}, conf.get("train") or {}
    out["method"] = out["method"] or (conf.get("adapter") or {}).get("method")
    out["objective"] = train.get("objective") or attack.get("loss")
    out["train_attack"] = attack.get("name")
    names = [data.get("name")] + ([data["eval_name"]] if data.get("eval_name") else [])
    out["trained_on"] = [n for n in dict.fromkeys(names) if n]
    return out


# ---- results files --------------------------------------------------------------------------------------
def _threat_dict(th: ThreatModel) -> dict[str, Any]:
    return {"norm": th.norm, "eps": float(th.eps), "eps_str": th.eps_text, "steps": th.steps,
            "step_size": th.step, "restarts": th.restarts, "random_start": th.random_start, "seed": th.seed}


def result_records(sweep: Sweep, provenance: dict[str, Any] | None = None, manifest: dict[str, Any] | None = None
                   ) -> list[dict[str, Any]]:
    """One results record per (data set, threat model) of ``sweep`` (a clean-only sweep: one per data set), in
    the schema ``RESULTS_SCHEMA`` (docs/evaluation.md, "Results files")."""
    prov = provenance if provenance is not None else adapter_provenance(sweep.adapter)
    man = manifest or {}
    s = sweep.settings
    out = []
    for r in sweep.results:
        cells = [(th, run) for th, run in zip(r.threats, r.runs)] if r.runs else [(None, None)]
        for th, _run in cells:
            eps_str = th.eps_text if th is not None else None
            attacks = {k: {"attack": a.attack, "threat": a.threat, "metrics": a.metrics, "clean": a.clean,
                           "asr": a.asr, "n_images": a.n_images, **({"subset": a.subset} if a.subset else {})}
                       for k, a in r.robust.items() if registry.split_key(k)[1] == eps_str}
            worst = r.worst(eps_str) if th is not None else None
            checks = [c for c in r.sanity if th is None or str(c).find(f"[eps {eps_str}]") >= 0
                      or "[eps " not in str(c)]
            out.append(_finite({
                "schema": RESULTS_SCHEMA, "protocol": s.protocol, "model": sweep.model, "adapter": sweep.adapter,
                "method": prov.get("method"), "objective": prov.get("objective"),
                "train_attack": prov.get("train_attack"), "trained_on": prov.get("trained_on", []),
                "data": r.spec, "dataset": r.name, "split": r.split, "task": r.task,
                "n_images": r.n_images, "n_texts": r.n_texts,
                "threat": None if th is None else _threat_dict(th),
                "attacks": s.attacks, "budget": {"square_queries": s.square_queries, "square_limit": s.square_limit,
                                                 "text_budget": s.text_budget, "objective": s.objective,
                                                 "gallery": s.gallery, "attack_options": s.attack_options},
                "headline": r.headline, "clean": r.clean,
                "robust": None if worst is None else {"attack": worst[0], "metrics": worst[1].metrics},
                "results": attacks,
                "sanity": {"verdict": verdict(checks) if checks else None,
                           "checks": [c.to_dict() for c in checks]},
                "versions": man.get("versions", {}), "commit": man.get("git_commit"), "time": man.get("time"),
            }))
    return out


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float as None: a results file is strict JSON (an attack success rate
    with no query right clean, or classification's text-to-image one, is nan in the evaluation)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


#: the keys every results record holds (``check_record``); records also write ``protocol``, checked when present
#: (records written before it lack it)
RECORD_KEYS = ("schema", "model", "adapter", "method", "objective", "train_attack", "trained_on", "data", "dataset",
               "split", "task", "n_images", "n_texts", "threat", "attacks", "budget", "headline", "clean", "robust",
               "results", "sanity", "versions", "commit", "time")


def check_record(record: Any) -> list[str]:
    """The problems of a results record against ``RESULTS_SCHEMA`` (empty: a valid record)."""
    if not isinstance(record, dict):
        return ["not a JSON object"]
    if record.get("schema") != RESULTS_SCHEMA:
        return [f"schema {record.get('schema')!r} is not {RESULTS_SCHEMA!r}"]
    out = [f"missing {k!r}" for k in RECORD_KEYS if k not in record]
    if not out:
        if record["task"] not in HEADLINE or record["headline"] != HEADLINE[record["task"]]:
            out.append(f"task {record['task']!r} / headline {record['headline']!r} do not match")
        if record["headline"] not in (record["clean"] or {}):
            out.append(f"clean metrics lack the headline {record['headline']!r}")
        if record["robust"] is not None and record["headline"] not in record["robust"].get("metrics", {}):
            out.append(f"robust metrics lack the headline {record['headline']!r}")
        if record["threat"] is not None and not {"norm", "eps", "eps_str", "steps"} <= set(record["threat"]):
            out.append("threat lacks norm, eps, eps_str or steps")
        if "protocol" in record and not (isinstance(record["protocol"], dict) and record["protocol"].get("name")):
            out.append("protocol is not an object with a name")
    return out


def result_file_name(record: dict[str, Any]) -> str:
    """``<data>__<norm>-<eps>.json`` (``clean`` without a threat model), safe as one file name; a data set given
    as a path is named by its last part and a hash of the whole path (two ``ann.jsonl`` stay apart)."""
    th = record.get("threat")
    tail = "clean" if th is None else f"{th['norm']}-{th['eps_str'].replace('/', '_')}"
    spec = str(record["data"])
    data = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(spec).name)
    if Path(spec).name != spec:
        data += f"-{stable_hash(spec) % 16**8:08x}"
    return f"{data}__{tail}.json"


# ---- the transfer table ----------------------------------------------------------------------------------
def transfer_rows(sweep: Sweep, baseline: Sweep | None = None, trained_on: Sequence[str] = ()) -> list[dict]:
    """Per data set (and eps): the headline metric clean and under the worst attack, their change from
    ``baseline`` (the same data sets; e.g. the model without its adapter), and whether it is one of
    ``trained_on``."""
    rows = []
    for r in sweep.results:
        base = next((b for b in baseline.results if b.spec == r.spec), None) if baseline else None
        eps_list = [t.eps_text for t in r.threats] if r.runs else [None]
        for eps in eps_list:
            worst = r.worst(eps) if eps else None
            clean = r.clean.get(r.headline)
            robust = worst[1].metrics.get(r.headline) if worst else None
            b_worst = base.worst(eps) if base is not None and eps else None
            b_clean = base.clean.get(r.headline) if base is not None else None
            b_robust = b_worst[1].metrics.get(r.headline) if b_worst else None
            rows.append({"data": r.spec, "task": r.task, "metric": r.headline, "n": r.n_images, "eps": eps,
                         "attack": worst[0].split("@")[0] if worst else None, "clean": clean, "robust": robust,
                         "d_clean": None if b_clean is None else clean - b_clean,
                         "d_robust": None if b_robust is None or robust is None else robust - b_robust,
                         "trained_on": _trained(r, trained_on)})
    return rows


def _trained(r: DataResult, trained_on: Sequence[str]) -> bool:
    names = {str(t) for t in trained_on}
    return r.spec in names or r.name in names or any(r.name == f"{t}-{r.split}" for t in names)


__all__ = ["DataResult", "HEADLINE", "RECORD_KEYS", "RESULTS_SCHEMA", "check_record", "Sweep", "SweepSettings",
           "adapter_provenance", "evaluate_data", "evaluate_sweep", "result_file_name", "result_records",
           "transfer_rows"]
