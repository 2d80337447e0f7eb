"""``robustbench``: RobustBench's ``model_info/<dataset>/<threat>/<Name>.json``, for classification under Linf or L2.

Flat keys (RobustBench/robustbench ``model_info``): ``link, name, authors, additional_data, number_forward_passes,
dataset, venue, architecture, eps, clean_acc, reported, autoattack_acc, footnote``; eps and accuracies are
strings (``"4/255"``, ``"64.02"``: percent with two decimals, the precision a round trip keeps). RobustBench
reads ``autoattack_acc`` as the accuracy under its AutoAttack; advlora writes the accuracy under its worst
attack there, names that attack and its steps in ``footnote`` and in its own keys ``attack`` and
``steps``, and leaves ``reported`` empty (a published number is a reported entry, never a measured one).
"""
from __future__ import annotations

import re
from typing import Any

from advlora.errors import AdvloraError
from advlora.experiments.exports import Format, register, require
from advlora.experiments.results import Result, Threat

THREATS = {"linf": "Linf", "l2": "L2"}
KEYS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue", "architecture",
        "eps", "clean_acc", "reported", "autoattack_acc")


def applies(result: Result) -> str:
    if result.kind != "measured":
        return "a reported entry (published number) is exported only as csv"
    if result.task != "classification":
        return "RobustBench holds classification only"
    if result.threat is None or result.threat.norm not in THREATS or result.robust is None:
        return "RobustBench needs a robust accuracy under Linf or L2"
    return ""


def export(result: Result) -> list[dict[str, Any]]:
    th, robust = result.threat, result.robust
    if th is None or robust is None:
        raise AdvloraError(f"{result.name()}: {applies(result)}")
    steps = "" if th.steps is None else f", {th.steps} steps"
    return [{"link": "", "name": result.name(), "authors": "", "additional_data": False,
             "number_forward_passes": 1, "dataset": result.dataset, "venue": "", "architecture": result.model,
             "eps": th.eps_str, "clean_acc": f"{result.clean['top1']:.2f}", "reported": "",
             "autoattack_acc": f"{robust['top1']:.2f}",
             "footnote": f"Robust accuracy under advlora's worst attack ({result.attack_name}{steps}) on "
                         f"{result.n_images} images, not RobustBench's AutoAttack.",
             "attack": result.attack, "steps": th.steps, "norm": THREATS[th.norm], "n_images": result.n_images,
             "adapter": result.adapter, "method": result.method, "objective": result.objective}]


def parse(docs: list[dict[str, Any]]) -> Result:
    if len(docs) != 1:
        raise AdvloraError(f"a RobustBench model_info is one document, not {len(docs)}")
    d = docs[0]
    require(d, KEYS, "a RobustBench model_info")
    norm = next((k for k, v in THREATS.items() if v == d.get("norm")), "linf")
    return Result(kind="measured", model=d["architecture"], task="classification", data=d["dataset"],
                  dataset=d["dataset"], headline="top1", clean={"top1": float(d["clean_acc"])},
                  robust={"top1": float(d["autoattack_acc"])}, threat=Threat.of(norm, d["eps"], d.get("steps")),
                  attack=d.get("attack"), adapter=d.get("adapter"), method=d.get("method"),
                  objective=d.get("objective"), n_images=d.get("n_images"))


def path(result: Result, doc: dict[str, Any]) -> str:
    """``model_info/<dataset>/<Linf|L2>/<Name>.json``, as in RobustBench's repository."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", doc["name"]).strip("_") or "model"
    data = re.sub(r"[^A-Za-z0-9._-]+", "_", doc["dataset"]).strip("_") or "data"
    return f"model_info/{data}/{doc['norm']}/{name}.json"


FORMAT = register(Format("robustbench", export, parse, applies, path,
                         doc="RobustBench's model_info JSON (classification under Linf or L2)"))
