"""``advlora demo``: AdvLoRA against its baselines on the embedded downstream task, under one budget, in minutes.

The tiny CLIP is pre-trained on ``emoji-source`` (emoji up to Emoji 5.0) and adapted to ``emoji-downstream``
(the emoji added since, which it has never seen). Six methods share every training setting (steps, batch,
training attack and eps, seed): zero-shot (the frozen tiny CLIP), clean full fine-tuning and clean LoRA
(conventional adaptation), adversarial full fine-tuning, adversarial LoRA (peft) and AdvLoRA. Each is evaluated
on the downstream test split clean and under FGSM, PGD-10 and Square (Square on a smaller subset: it is a
black-box attack paying one forward pass per query) at the demo eps, plus PGD at more eps values for the
robust-vs-eps plot; then clean and under PGD-10 at the demo eps on the source test split, for what adaptation
costs on what the model knew (forgetting). The report states the paper's three claims with this run's numbers
(``advlora.experiments.claims``). The demo is a grid (``advlora.experiments.grid``), so an interrupted demo
resumes where it stopped when run again with the same ``--out``.

The demo eps is linf 4/255 in pixel space (training and evaluation alike): at the tiny model's 48 x 48 input
2/255 barely moves r_mean, so the comparison is made where the attack bites; the sweep shows the rest of the
curve. Budgets and the measurements behind them: docs/experiments.md.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from advlora.config import load_yaml, merge
from advlora.experiments import backend
from advlora.experiments import cells as C
from advlora.experiments.claims import claims
from advlora.experiments.grid import default_intro, fingerprint, run_grid
from advlora.experiments.spec import GridConfig, load_grid_config, slug, train_cells
from advlora.experiments.summarize import clean_stat, primary_results, robust_stat
from advlora.io import atomic_dir, write_json
from advlora.report.report import SectionItem, Table

#: the data the model was pre-trained on, where the demo also evaluates every method (forgetting)
SOURCE = "emoji-source"
#: the classification set of the transfer table (zero-shot classification of emoji, whatever their variant)
CLASSIFICATION = "emoji-cls"
#: the shipped grid the demo is: its six methods, the data (emoji-downstream), the budget (200 steps x batch
#: 64, PGD-3 at 4/255) and the evaluation
GRID = "grid-tiny-clip.yaml"
#: what the demo adds to that grid
DEMO_OVERRIDES: dict = {"name": "demo", "eval": {"sanity_limit": 32}}

#: ``--quick``: the same comparison with smaller budgets, at most 2 minutes once tiny-clip is cached (CI)
QUICK_OVERRIDES: dict = {
    "train": {"train": {"steps": 40, "batch_size": 32}},
    "eval": {"sweep_eps": ["8/255"], "limit": 100, "square_limit": 16, "square_queries": 50, "sanity_limit": 16},
}


def demo_config(quick: bool = False, overrides: list[str] | None = None, *, tiny_test: bool = False) -> GridConfig:
    """The demo's grid config (``quick``: CI budget; ``tiny_test``: a random test-size model, for tests)."""
    base = merge(load_yaml(resources.files("advlora.configs") / GRID), DEMO_OVERRIDES)
    if quick or tiny_test:
        base = merge(base, QUICK_OVERRIDES)
    if tiny_test:
        base = merge(base, {"random_model": "clip:test", "train": {"train": {"steps": 3, "batch_size": 8}},
                            "eval": {"limit": 24, "square_limit": 8, "square_queries": 10, "steps": 3,
                                     "sanity_limit": 8}})
    return load_grid_config(None, overrides, base=base)


def intro(cfg: GridConfig, summary: dict, quick: bool, source: str | None) -> list[str]:
    """The report's opening: what was compared, under which single budget, on which machine."""
    man = summary.get("manifest", {})
    lead = (f"{'Quick demo' if quick else 'Demo'}: `{summary['model']}` adapted to {cfg.datasets[0]}"
            + (f" (pre-trained on {source} only)" if source else "") + ": zero-shot, conventional adaptation "
            "(clean full fine-tuning, clean LoRA) and adversarial adaptation (full fine-tuning, LoRA (peft), "
            "AdvLoRA). All trained methods share one budget (steps, batch, training attack, eps, seed); the "
            "learning rate is the trainer's default for each kind of method (listed below). The clean methods "
            "train on clean images, every other trained method on adversarial ones.")
    return [lead, *default_intro(cfg, summary), f"Python {man.get('python', '')}; "
            + ", ".join(f"{k} {v}" for k, v in man.get("versions", {}).items() if v)]


def forgetting(cfg: GridConfig, root: Path, data: str, *, run: bool = True, folder_name: str = "forgetting"
               ) -> dict[str, dict[str, Any]]:
    """Each trained method clean and under PGD at the demo eps on ``data`` (the pre-training data, or another
    set of the transfer table).

    One folder per method, ``cells/<cell>/<folder_name>-<eps>``, complete once its marker is written; a complete
    one made under other evaluation settings is evaluated again. ``run=False`` only reads complete ones.
    Returns label -> {"clean", "robust", "metric", "n_images", "threat"} (the set's headline metric, r_mean or
    top1, in %).
    """
    eps = cfg.eval.eps[0]
    want = fingerprint({"eval": vars(cfg.eval), "data": data, "eps": eps})
    out: dict[str, dict[str, Any]] = {}
    for tc in train_cells(cfg):
        folder = root / "cells" / tc.key / f"{folder_name}-{slug(eps)}"
        done = C.is_complete(folder) and C.eval_result(folder).get("fingerprint") == want
        if not done and run and C.is_complete(root / "cells" / tc.key):
            model = backend.load_trained(cfg, tc.method.method, root / "cells" / tc.key / "run")
            res = backend.evaluate(cfg, model, data, ["pgd"], eps, seed=tc.seed)
            with atomic_dir(folder) as tmp:
                write_json(tmp / "metrics.json", {**res, "data": data, "fingerprint": want})
                C.mark_complete(tmp)
            done = True
        if done:
            a = C.eval_result(folder)["attacks"]["pgd"]
            metric = "top1" if "top1" in a["clean"] else "r_mean"
            out[tc.method.label] = {"clean": a["clean"][metric], "robust": a["metrics"][metric], "metric": metric,
                                    "n_images": a.get("n_images"), "threat": a.get("threat", "")}
    return out


def forgetting_table(summary: dict, data: str) -> str:
    """The terminal table of the forgetting evaluation: r_mean on ``data`` and its change from zero-shot."""
    if not summary.get("forgetting"):
        return ""
    return "\n".join([f"forgetting: the same models on the {data} test split (pre-training data); "
                      "d = change from zero-shot", _aligned(*forgetting_rows(summary))])


def _aligned(header: list[str], body: list[list[str]]) -> str:
    """A table as the terminal prints it: the first column left-aligned, the others right-aligned."""
    lines = [header, *body]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in lines)


def transfer(cfg: GridConfig, root: Path, sets: list[str], *, run: bool = True,
             forgetting_set: str | None = SOURCE) -> dict[str, dict[str, dict]]:
    """The transfer table's sets beyond the downstream one: data set -> ``forgetting`` of each method there (one
    folder per set: ``cells/<cell>/transfer-<set>-<eps>``; ``forgetting_set`` reuses the forgetting folders)."""
    return {d: forgetting(cfg, root, d, run=run,
                          folder_name="forgetting" if d == forgetting_set else f"transfer-{slug(d)}") for d in sets}


def transfer_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the transfer table: per method, the downstream set it adapted to (from the grid's own
    results), then every set of ``summary["transfer"]``: clean / robust under PGD at the demo eps, and the
    change of each from zero-shot."""
    eps, steps = summary["eval"]["eps"][0], summary["eval"]["steps"]
    key = f"pgd@{eps}"
    per_set = {f"{summary['datasets'][0]} (adapted to)": {
        label: {"clean": clean_stat(e).get("mean"), "robust": robust_stat(e, key).get("mean"), "metric": "r_mean",
                "n_images": e.get("clean_n_images")}
        for label, e in primary_results(summary).items()}}
    for d, rows in summary.get("transfer", {}).items():
        if rows:
            per_set[d + (" (pre-training)" if d == SOURCE else "")] = rows
    header = ["method"]
    for name, rows in per_set.items():
        first = next(iter(rows.values()), {})
        header += [f"{name} {first.get('metric', 'r_mean')} clean (n={first.get('n_images')})", f"PGD-{steps} {eps}",
                   "d clean", "d robust"]
    body = []
    for label in primary_results(summary):
        line = [label]
        for rows in per_set.values():
            r, base = rows.get(label, {}), rows.get("zero-shot", {})
            vals = [r.get("clean"), r.get("robust")]
            line += [_num(v) for v in vals] + [_num(None if v is None or base.get(k) is None else v - base[k], "+")
                                               for v, k in zip(vals, ("clean", "robust"))]
        body.append(line)
    return header, body


def _num(v: float | None, sign: str = "") -> str:
    return "-" if v is None else f"{v:{sign}.1f}"


def transfer_table(summary: dict) -> str:
    """The terminal transfer table (``transfer_rows``)."""
    if not summary.get("transfer"):
        return ""
    return "\n".join(["transfer: every method on the set it adapted to and on sets it was not adapted on "
                      "(r_mean; top1 for classification); d = change from zero-shot",
                      _aligned(*transfer_rows(summary))])


def forgetting_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the forgetting table: clean and robust on the pre-training data, and the change of each
    from zero-shot (the terminal and the report show these same rows)."""
    rows = summary.get("forgetting", {})
    eps, steps = summary["eval"]["eps"][0], summary["eval"]["steps"]
    metric = next(iter(rows.values()), {}).get("metric", "r_mean")
    n = next(iter(rows.values()), {}).get("n_images")
    base = rows.get("zero-shot")
    header = ["method", f"{metric} clean (n={n})", f"PGD-{steps} {eps}", "d clean", "d robust"]
    body = []
    for label, r in rows.items():
        d = [f"{r['clean'] - base['clean']:+.1f}", f"{r['robust'] - base['robust']:+.1f}"] if base else ["-", "-"]
        body.append([label, f"{r['clean']:.1f}", f"{r['robust']:.1f}", *d])
    return header, body


def sections(summary: dict, data: str | None) -> list[tuple[str, list[SectionItem]]]:
    """The demo's own report sections, as tables: the forgetting on the pre-training data and the transfer table
    (the claims are the report's own)."""
    out: list[tuple[str, list[SectionItem]]] = []
    if data and summary.get("forgetting"):
        header, body = forgetting_rows(summary)
        out.append((f"Forgetting: the same models on {data} (test split, pre-training data)",
                    [Table(header, body, note="d = change from zero-shot.")]))
    if summary.get("transfer"):
        header, body = transfer_rows(summary)
        out.append(("Transfer: the set adapted to, and sets not adapted on", [
            Table(header, body, note="r_mean for retrieval, top1 for classification; d = change from zero-shot.")]))
    return out


def run_demo(out: str | Path, *, quick: bool = False, overrides: list[str] | None = None,
             tiny_test: bool = False, report_only: bool = False, jobs: int = 1,
             forgetting_data: str | None = SOURCE, transfer_data: tuple[str, ...] = (CLASSIFICATION,),
             progress: str = "auto") -> tuple[dict, str]:
    """Run (or resume) the demo under ``out``; returns (summary, the tables and claims as printed).
    ``progress``: the train cells done, a ``BatchProgress`` mode.

    ``forgetting_data``: the data set every method is also evaluated on (the model's pre-training data;
    None: no forgetting evaluation, e.g. when ``--data`` replaces the downstream task by one unrelated to it).
    ``transfer_data``: further sets of the transfer table (default the emoji classification set); the table
    shows the downstream set, ``forgetting_data`` and these.
    """
    cfg = demo_config(quick, overrides, tiny_test=tiny_test)
    root = Path(out)
    title = f"advlora {'quick ' if quick else ''}demo: AdvLoRA vs baselines"

    def extra(summary: dict) -> list[tuple[str, list[SectionItem]]]:
        if forgetting_data:  # after every cell of the grid: the trained models are there to evaluate
            summary["forgetting"] = forgetting(cfg, root, forgetting_data, run=not report_only)
        sets = [d for d in (forgetting_data, *transfer_data) if d]
        if sets and transfer_data:
            summary["transfer"] = transfer(cfg, root, sets, run=not report_only, forgetting_set=forgetting_data)
        return sections(summary, forgetting_data)

    summary, table = run_grid(cfg, out, title=title, intro=lambda s: intro(cfg, s, quick, forgetting_data),
                              extra=extra, report_only=report_only, jobs=jobs, progress=progress)
    parts = [table, forgetting_table(summary, forgetting_data) if forgetting_data else "", transfer_table(summary),
             "\n".join(line for c in claims(summary) for line in c.lines())]
    return summary, "\n\n".join(p for p in parts if p)
