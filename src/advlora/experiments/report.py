"""The report of a method comparison (``advlora demo``, ``advlora grid``), laid out as a paper's results section.

It opens with the sanity verdict (whether the robust numbers can be trusted at all), then one sentence on what
is compared, the paper's claims with their verdicts and the headline table with its threat models; then the
details (further sections, Recall@1 and ASR, every check, the plots); how the run was made (budget, learning
rates, command line, package versions) comes last.

``render(summary, root, ...)`` draws the plots into ``root/plots``, writes report.md, report.html and
summary.json, and returns the plain-text table the command prints.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from advlora.attacks import registry
from advlora.attacks.registry import result_key, split_key
from advlora.evaluation.sanity import Check, verdict, white_box_reference
from advlora.experiments.claims import claim_sections
from advlora.experiments.summarize import attack_name, eps_sweep, sweep_attack
from advlora.report import plots
from advlora.report.plots import count
from advlora.report.report import Report, SectionItem, write_report
from advlora.report.tables import metrics_table


def fmt(stat: dict | None, seeds: int = 1) -> str:
    """``45.2`` for one seed, ``45.2 ± 1.3`` for several; ``-`` when missing."""
    if not stat or stat.get("n", 0) == 0 or math.isnan(stat.get("mean", float("nan"))):
        return "-"
    return f"{stat['mean']:.1f}" if seeds <= 1 or stat["n"] <= 1 else f"{stat['mean']:.1f} ± {stat['std']:.1f}"


def columns(summary: dict[str, Any], res: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(robust key, column header) in the order of the eval spec: attacks x eps, then the sweep attack's eps."""
    ev = summary["eval"]
    sweep = [e for e in ev.get("sweep_eps", []) if e not in ev["eps"]]
    show_eps = len(ev["eps"]) > 1 or bool(sweep)
    n_sq = _square_n(res or {})
    out = [(result_key(a, eps), _header(a, eps, ev, show_eps, n_sq)) for eps in ev["eps"] for a in ev["attacks"]]
    swept = sweep_attack(ev)
    return out + [(result_key(swept, eps), _header(swept, eps, ev, True, n_sq)) for eps in sweep]


def _subset_attack(attack: str) -> bool:
    """Whether ``attack`` runs on the eval spec's ``square_limit`` subset (the black-box attacks)."""
    spec = registry.find(attack)
    return spec is not None and spec.kind == "black-box"


def _square_n(res: dict[str, Any]) -> int | None:
    """The number of images the black-box attacks (Square) actually ran on (their subset), from the results."""
    for e in res.values():
        for key, r in e.get("robust", {}).items():
            if _subset_attack(split_key(key)[0]):
                return r.get("n_images")
    return None


def _header(attack: str, eps: str, ev: dict, show_eps: bool, n_square: int | None) -> str:
    name = attack_name(attack, ev["steps"])
    if _subset_attack(attack) and n_square:
        name += f" (n={n_square})"
    return f"{name} {eps}" if show_eps else name


#: the main table's metric and how the report describes it: r_mean on retrieval sets, top-1 on classification sets
#: (whose results hold ``top1``: the class-prompt classifier's accuracy)
HEADLINES = {"r_mean": "r_mean in %, the mean of R@1/5/10 in both directions",
             "top1": "top-1 accuracy in % of the class-prompt classifier"}


def headline(res: dict[str, Any]) -> str:
    """The main table's metric of a data set's results: ``top1`` where its clean metrics hold it, else ``r_mean``."""
    return "top1" if any("top1" in e.get("clean", {}) for e in res.values()) else "r_mean"


def table_rows(summary: dict[str, Any], dataset: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table: the headline metric (``headline``) clean and per attack, trainable
    parameters, training time."""
    seeds = len(summary["seeds"])
    res = summary["results"].get(dataset, {})
    metric = headline(res)
    n_main = next((e.get("clean_n_images") for e in res.values() if e.get("clean_n_images")), None)
    cols = columns(summary, res)
    header = ["method", "trainable", "train s", f"clean (n={n_main})", *[h for _, h in cols]]
    has_square = any(_subset_attack(split_key(k)[0]) for k, _ in cols)
    if has_square:
        header.append(f"clean (n={_square_n(res)})")
    rows = []
    for label, e in res.items():
        row = [label, count(e.get("trainable")), fmt(e.get("train_time_s"), seeds),
               fmt(e.get("clean", {}).get(metric), seeds)]
        row += [fmt(e.get("robust", {}).get(k, {}).get("metrics", {}).get(metric), seeds) for k, _ in cols]
        if has_square:
            sq = next((e["robust"][k] for k, _ in cols
                       if _subset_attack(split_key(k)[0]) and k in e.get("robust", {})), None)
            row.append(fmt(sq["clean_same_images"].get(metric) if sq else None, seeds))
        rows.append(row)
    return header, rows


def detail_rows(summary: dict[str, Any], dataset: str) -> tuple[list[str], list[list[str]]]:
    """R@1 both ways and attack success rate per method and attack (first eps)."""
    seeds = len(summary["seeds"])
    header = ["method", "attack", "eps", "i2t R@1 clean", "i2t R@1 adv", "t2i R@1 clean", "t2i R@1 adv",
              "ASR i2t %", "ASR t2i %"]
    rows = []
    for label, e in summary["results"].get(dataset, {}).items():
        for r in e.get("robust", {}).values():
            m, c = r["metrics"], r["clean_same_images"]
            rows.append([label, r["attack"], r["eps"], fmt(c.get("i2t_r1"), seeds), fmt(m.get("i2t_r1"), seeds),
                         fmt(c.get("t2i_r1"), seeds), fmt(m.get("t2i_r1"), seeds), fmt(r["asr"]["i2t"], seeds),
                         fmt(r["asr"]["t2i"], seeds)])
    return header, rows


def threat_lines(summary: dict[str, Any], dataset: str) -> list[str]:
    """One line per attack and eps: the threat model every number of that column was measured under."""
    seen: dict[str, str] = {}
    for e in summary["results"].get(dataset, {}).values():
        for key, r in e.get("robust", {}).items():
            seen.setdefault(key, f"{r['attack']} @ {r['eps']}: {r['threat']} (n={r['n_images']} images)")
    return list(seen.values())


def text_table(summary: dict[str, Any], dataset: str) -> str:
    """The main table as the terminal prints it, with the threat models beside (under) it."""
    header, rows = table_rows(summary, dataset)
    body = {r[0]: dict(zip(header[1:], r[1:])) for r in rows}
    metric = headline(summary["results"].get(dataset, {}))
    lines = [metrics_table(body, columns=header[1:], first="method"), "", f"{metric} in %; threat models:"]
    lines += [f"  {t}" for t in threat_lines(summary, dataset)]
    return "\n".join(lines)


def read_history(path: Path) -> tuple[list[float], dict[str, list[float]]]:
    """history.csv -> (steps, {column: values}); non-numeric cells become nan."""
    if not path.is_file():
        return [], {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return [], {}
    cols: dict[str, list[float]] = {k: [] for k in rows[0] if k}
    for r in rows:
        for k in cols:
            try:
                cols[k].append(float(r[k]))
            except (TypeError, ValueError):
                cols[k].append(float("nan"))
    steps = cols.pop("step", list(range(1, len(rows) + 1)))
    return steps, cols


def alpha_columns(cols: dict[str, list[float]]) -> dict[str, list[float]]:
    """The per-layer alpha columns of a history (``alpha/<layer>``; not ``alpha_mean/<tower>`` or ``alpha_lr``)."""
    return {k.split("/", 1)[1]: v for k, v in cols.items()
            if k.startswith("alpha/") and not all(math.isnan(x) for x in v)}


def make_plots(summary: dict[str, Any], root: Path, histories: dict[str, Path]) -> dict[str, str]:
    """Draw the four plots; returns name -> path relative to ``root``."""
    ds = summary["datasets"][0]
    res = summary["results"].get(ds, {})
    ev = summary["eval"]
    pdir = root / "plots"
    out = {}
    swept = sweep_attack(ev)
    series = {label: eps_sweep(e, swept) for label, e in res.items()}
    series = {k: v for k, v in series.items() if len(v) > 1}
    if series:
        plots.robust_vs_eps(series, pdir / "robust_vs_eps.png", attack=registry.get(swept).table_name(ev["steps"]),
                            subtitle=f"{ds}, n={next(iter(res.values())).get('clean_n_images')} images; eps 0 = clean")
        out["robust_vs_eps"] = "plots/robust_vs_eps.png"
    headline = white_box_reference(ev["attacks"]) or next(iter(ev["attacks"]), None)
    key = result_key(headline, ev["eps"][0]) if headline else None
    pts = {label: (e["clean"]["r_mean"]["mean"], e["robust"][key]["metrics"]["r_mean"]["mean"],
                   e.get("trainable") or 0)
           for label, e in res.items() if key in e.get("robust", {}) and "r_mean" in e.get("clean", {})}
    if pts:
        plots.clean_vs_robust(pts, pdir / "clean_vs_robust.png", attack=f"{attack_name(headline)} {ev['eps'][0]}")
        out["clean_vs_robust"] = "plots/clean_vs_robust.png"
    hist = {label: read_history(p) for label, p in histories.items()}
    alpha_runs = {label: (s, alpha_columns(c)) for label, (s, c) in hist.items() if alpha_columns(c)}
    plots.alpha_trajectories(alpha_runs, pdir / "alpha_trajectories.png")
    out["alpha_trajectories"] = "plots/alpha_trajectories.png"
    curves = {label: (s, c) for label, (s, c) in hist.items() if s}
    if curves:
        plots.training_curves(curves, pdir / "training_curves.png")
        out["training_curves"] = "plots/training_curves.png"
    return out


_CAPTIONS = {
    "robust_vs_eps": "Robust r_mean under PGD against eps, every method (eps 0 = clean).",
    "clean_vs_robust": "Clean vs robust r_mean at the headline eps; marker area grows with trainable parameters.",
    "alpha_trajectories": "AdvLoRA's trainable alpha per adapted layer over training (thick: tower mean).",
    "training_curves": "Training loss and learning rate of every trained method.",
}


def render(summary: dict[str, Any], root: Path, *, title: str, intro: list[str], histories: dict[str, Path],
           extra: list[tuple[str, list[SectionItem]]] | None = None,
           extra_plots: list[tuple[str, str]] | None = None) -> str:
    """Write plots, report.md, report.html and summary.json under ``root``; return the terminal table.

    ``extra``: more sections (heading, bullet lines and ``Table``s); ``extra_plots``: plots already drawn, as
    (path relative to
    ``root``, caption), shown first."""
    own = make_plots(summary, root, histories)
    figs = {Path(rel).stem: rel for rel, _ in extra_plots or []} | own
    captions = {Path(rel).stem: caption for rel, caption in extra_plots or []} | {k: _CAPTIONS[k] for k in own}
    summary["plots"] = figs
    rep = Report(title)
    checks = sanity_checks(summary)
    rep.text(headline_verdict([c for _, c in checks]))
    rep.text(overview(summary))
    for heading, items in claim_sections(summary):
        rep.heading(heading).bullets(items)
    for ds in summary["datasets"]:
        rep.heading(f"Results on {ds}" if len(summary["datasets"]) > 1 else "Results")
        header, rows = table_rows(summary, ds)
        rep.table(header, rows)
        rep.text(HEADLINES[headline(summary["results"].get(ds, {}))]
                 + (f"; mean ± {summary['spread']}" if len(summary["seeds"]) > 1 else "") + ". Threat models:")
        rep.bullets(threat_lines(summary, ds))
    for heading, items in extra or []:
        rep.section(heading, items)
    for ds in summary["datasets"]:
        header, rows = detail_rows(summary, ds)
        rep.heading("Recall@1 and attack success rate" + (f" on {ds}" if len(summary["datasets"]) > 1 else ""),
                    ).table(header, rows)
    rep.heading("Sanity checks")
    rep.text(f"Verdict: {verdict([c for _, c in checks])}. Per evaluation (from the robust evaluation), then across "
             "evaluations (eps sweep); docs/evaluation.md says how to read each flag.")
    flags = [f"{where}: {c}" if where else str(c) for where, c in checks if not c.passed]
    if flags:
        rep.bullets(flags)
    rep.details(f"All {len(checks)} checks", "\n".join(sanity_lines(summary)) or "(none reported)")
    rep.heading("Plots")
    for name, rel in figs.items():
        rep.image(rel, captions[name])
    if summary.get("missing_cells"):
        rep.heading("Missing cells").bullets(summary["missing_cells"])
    rep.heading("How this was run")
    for para in intro:
        rep.text(para)
    write_report(root, rep, summary)
    return "\n\n".join(text_table(summary, ds) if len(summary["datasets"]) == 1 else f"[{ds}]\n" +
                       text_table(summary, ds) for ds in summary["datasets"])


def headline_verdict(checks: list[Check]) -> str:
    """The report's first line: the sanity verdict, short (the flags themselves are listed under "Sanity checks")."""
    flagged = [c for c in checks if not c.passed]
    if not flagged:
        return f"**Sanity verdict: {verdict(checks)}** (the checks are listed under \"Sanity checks\")."
    return (f"**Sanity verdict: {len(flagged)} of {len(checks)} checks flagged**; the robust numbers below may "
            "overstate robustness until they are explained (each flag, with what it suggests, under \"Sanity "
            "checks\").")


def overview(summary: dict[str, Any]) -> str:
    """One sentence: which model, data, methods and seeds the report compares, and its headline attack."""
    ev = summary.get("eval", {})
    labels = list(next(iter(summary["results"].values()), {}))
    headline = white_box_reference(ev.get("attacks", [])) or next(iter(ev.get("attacks", [])), None)
    seeds = summary.get("seeds", [])
    return (f"`{summary.get('model', '')}` on {', '.join(summary['datasets'])}: {len(labels)} methods "
            f"({', '.join(labels)}), {len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
            + (f"; headline attack {attack_name(headline, ev.get('steps'))} at {ev['eps'][0]}"
               if headline and ev.get("eps") else "")
            + ". The budget, learning rates, command line and package versions are at the end.")


def sanity_checks(summary: dict[str, Any]) -> list[tuple[str, Check]]:
    """(where, check): the robust evaluation's own checks per method and eps (``AdvLoRA @ 2/255``), then the
    experiment-level ones (where ``""``); entries of summary.json read back are accepted."""
    out = []
    for ds, res in summary["results"].items():
        prefix = f"{ds} / " if len(summary["results"]) > 1 else ""
        for label, e in res.items():
            for eps, checks in e.get("sanity", {}).items():
                out += [(f"{prefix}{label} @ {eps}", Check.from_dict(c)) for c in checks]
    return out + [("", Check.from_dict(c)) for c in summary.get("checks", [])]


def sanity_lines(summary: dict[str, Any]) -> list[str]:
    """``sanity_checks`` as the report prints them: ``where: STATUS message (hint)``."""
    return [f"{where}: {c}" if where else str(c) for where, c in sanity_checks(summary)]
