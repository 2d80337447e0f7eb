"""Model cards: a ``README.md`` in the Hugging Face convention for a saved adapter folder.

The card's YAML front matter holds ``base_model``, ``library_name: peft`` and the ``peft`` tag where the method's
declaration says its folder is peft's format (``AdapterMethod.peft_format``: the card then shows how to load it
with ``PeftModel.from_pretrained``; a prompt's or full fine-tuning's folder has no library that loads it but
advlora, and says so), ``tags`` and ``model-index``: one result per results record of an evaluation of this adapter
(the data set and threat model), whose metrics are the record's clean metrics (``name: clean <metric>``) and its
worst attack's (``name: robust <metric> (<norm> <eps>, <attack>)``, with the threat model in ``args``), values in
percent as the record holds them. ``card_results`` reads those results back from a card, so a card can be checked
against the files it came from. A card carries ``MARKER``: only a README.md with it is the tool's to overwrite.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from advlora.adapters import method as adapter_methods
from advlora.errors import AdvloraError
from advlora.experiments.results import Result, Threat
from advlora.models import FAMILIES

#: the line every card written here carries; a README.md without it was written by someone else
MARKER = "<!-- written by `advlora adapter card`: rewritten on the next run; remove this line to keep edits -->"
TASK_TYPES = {"retrieval": ("image-text-retrieval", "Image-text retrieval"),
              "classification": ("zero-shot-image-classification", "Zero-shot image classification")}


def adapter_meta(adapter_dir: Path) -> dict[str, Any]:
    """``advlora.json``'s method, model and arch, and peft's base model, each empty when absent."""
    out: dict[str, Any] = {"method": "", "model": "", "arch": "", "base": ""}
    for name, keys in (("advlora.json", ("method", "model", "arch")), ("adapter_config.json", ())):
        f = adapter_dir / name
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except ValueError:
            continue
        for k in keys:
            out[k] = data.get(k) or ""
        if name == "adapter_config.json":
            out["base"] = data.get("base_model_name_or_path") or ""
    return out


def model_index_result(r: Result) -> dict[str, Any]:
    """One ``model-index`` result of a measured result."""
    task_type, task_name = TASK_TYPES[r.task]
    metrics = [{"type": k, "value": v, "name": f"clean {k}", "verified": False}
               for k, v in r.clean.items() if v is not None]
    if r.robust is not None and r.threat is not None:
        threat = f"{r.threat.norm} {r.threat.eps_str}, {r.attack_name}"
        args = {"norm": r.threat.norm, "eps": r.threat.eps_str, "steps": r.threat.steps, "attack": r.attack}
        metrics += [{"type": k, "value": v, "name": f"robust {k} ({threat})", "args": dict(args),
                     "verified": False} for k, v in r.robust.items() if v is not None]
    return {"task": {"type": task_type, "name": task_name},
            "dataset": {"name": r.dataset, "type": r.data, "split": (r.record or {}).get("split") or "test"},
            "metrics": metrics}


def card_results(text: str) -> list[Result]:
    """The results a card's ``model-index`` holds (the inverse of ``model_index_result``, per result)."""
    meta = front_matter(text)
    out = []
    index = meta.get("model-index") or []
    for entry in index[0].get("results", []) if index else []:
        task = next(k for k, (t, _) in TASK_TYPES.items() if t == entry["task"]["type"])
        clean, robust, threat, attack = {}, {}, None, None
        for m in entry["metrics"]:
            if m["name"].startswith("clean "):
                clean[m["type"]] = m["value"]
            else:
                robust[m["type"]] = m["value"]
                a = m["args"]
                threat, attack = Threat.of(a["norm"], a["eps"], a["steps"]), a["attack"]
        out.append(Result(kind="measured", model=meta.get("base_model") or "", task=task,
                          data=entry["dataset"]["type"], dataset=entry["dataset"]["name"],
                          headline="top1" if task == "classification" else "r_mean", clean=clean,
                          robust=robust or None, threat=threat, attack=attack))
    return out


def front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card (``---`` ... ``---`` at its start); {} when there is none."""
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---\n", 4)
    if end < 0:
        raise AdvloraError("a model card's front matter is not closed by ---")
    data = yaml.safe_load(text[4:end]) or {}
    if not isinstance(data, dict):
        raise AdvloraError("a model card's front matter is not a mapping")
    return data


def _local(name: str) -> bool:
    """Whether ``name`` is a local folder rather than a Hub id (``org/name``)."""
    return Path(name).is_absolute() or name.startswith(".") or Path(name).exists()


def results_of(adapter_dir: str | Path, records: list[dict[str, Any]]) -> list[Result]:
    """The measured results of the records whose adapter is ``adapter_dir`` (the same folder once resolved;
    records of the model without it, or of other adapters, are left out)."""
    folder = Path(adapter_dir).resolve()
    return [Result.from_record(rec) for rec in records
            if rec.get("adapter") and Path(str(rec["adapter"])).resolve() == folder]


def peft_format(adapter_dir: Path, method: str) -> bool:
    """Whether the folder is one ``PeftModel.from_pretrained`` loads: its method's declaration says
    (``AdapterMethod.peft_format``); for a method not declared here (a plugin's, not loaded) the folder's own
    peft ``adapter_config.json`` does."""
    try:
        return adapter_methods.get(method).peft_format
    except AdvloraError:
        return (adapter_dir / "adapter_config.json").is_file()


def _use(folder: Path, base: str, arch: str, peft: bool) -> list[str]:
    """The card's "Use" section: advlora's loading, and peft's where the folder is peft's format."""
    lines = ["## Use", "", "```python", "from advlora.models import load_model",
             "from advlora.adapters import load_adapter", "",
             f"model = load_model({base or 'BASE_MODEL'!r})",
             f"load_adapter(model, {str(folder)!r})", "```", ""]
    if not peft:
        return lines + ["The folder is advlora's own format (no peft adapter): only advlora loads it.", ""]
    cls = FAMILIES[arch].model_class if arch in FAMILIES else "AutoModel"
    return lines + ["With peft alone, on the transformers model:", "", "```python", "from peft import PeftModel",
                    f"from transformers import {cls}", "",
                    f"base = {cls}.from_pretrained({base or 'BASE_MODEL'!r})",
                    f"model = PeftModel.from_pretrained(base, {str(folder)!r})", "```", ""]


def model_card(adapter_dir: str | Path, results: list[Result]) -> str:
    """The README.md text of ``adapter_dir`` from the measured ``results`` of evaluations run on it."""
    folder = Path(adapter_dir)
    meta = adapter_meta(folder)
    models = list(dict.fromkeys(r.model for r in results if r.model))
    base = meta["model"] or meta["base"] or (models[0] if models else "")
    method = meta["method"] or next((r.method for r in results if r.method), "") or "adapter"
    objectives = list(dict.fromkeys(r.objective for r in results if r.objective))
    peft = peft_format(folder, method)
    tags = list(dict.fromkeys(t for t in ["advlora", method, *objectives, meta["arch"], "adversarial-robustness",
                                          "peft" if peft else ""] if t))
    front: dict[str, Any] = {}
    if base and not _local(base):
        front["base_model"] = base   # the Hub reads base_model as a repository id; a local folder is not one
    if peft:
        front["library_name"] = "peft"
    front.update({"tags": tags, "model-index": [{"name": folder.resolve().name,
                                                 "results": [model_index_result(r) for r in results]}]})
    kind = "a peft adapter folder" if peft else "advlora's own format, not a peft adapter"
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip("\n"), "---", MARKER, "",
             f"# {folder.resolve().name}", "",
             f"A `{method}` adapter{f' of `{base}`' if base else ''} saved by "
             f"advlora ({kind}; `advlora.json` records the method's settings)."
             + (f" Training objective: {', '.join(objectives)}." if objectives else ""), "",
             "## Evaluation", "",
             "Metrics in percent from advlora's results files (schema `advlora.results/1`). Robust numbers are "
             "under the worst attack the evaluation ran at that threat model; the sanity column is the "
             "evaluation's verdict on signs of gradient masking.", "",
             "| data | task | n | threat | metric | clean | robust | attack | sanity |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r.clean.get(r.headline)
        rb = None if r.robust is None else r.robust.get(r.headline)
        lines.append(f"| {r.data} | {r.task} | {r.n_images if r.n_images is not None else '-'} | "
                     f"{'clean only' if r.threat is None else r.threat.label()} | {r.headline} | "
                     f"{'-' if c is None else f'{c:.1f}'} | {'-' if rb is None else f'{rb:.1f}'} | "
                     f"{r.attack_name or '-'} | {r.sanity or '-'} |")
    lines += ["", *_use(folder, base, meta["arch"], peft)]
    return "\n".join(lines)


def write_card(adapter_dir: str | Path, results: list[Result], out: str | Path | None = None) -> Path:
    """Write the card to ``out`` (default: ``adapter_dir/README.md``); a file there without ``MARKER`` was
    written by someone else and is never overwritten (one error line)."""
    target = Path(out) if out is not None else Path(adapter_dir) / "README.md"
    if target.is_file() and MARKER not in target.read_text(encoding="utf-8", errors="replace"):
        raise AdvloraError(f"{target} was not written by advlora; not overwriting it (write the card elsewhere "
                           "with --out)")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(model_card(adapter_dir, results), encoding="utf-8")
    return target


__all__ = ["MARKER", "card_results", "front_matter", "model_card", "peft_format", "results_of", "write_card"]
