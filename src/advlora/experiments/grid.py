"""``advlora grid``: methods x attacks x eps values x data sets x seeds, each cell a resumable run folder.

Layout of the output folder::

    grid.yaml  manifest.json                       the resolved config and how it was run
    cells/<data>/<method>/seed<k>/run/             the training run (advlora.training), train.json, COMPLETE
    cells/<data>/<method>/seed<k>/eval-<attack>-<eps>/metrics.json, COMPLETE
    summary.json  report.md  report.html  plots/   written from the complete cells

Each train cell is followed by its eval cells, so an interrupted grid keeps every finished result; run the
same command again and complete cells are skipped (a training interrupted half-way resumes from its last
checkpoint). A cell made under a different configuration is an error, never silently reused.

``jobs > 1`` runs that many train cells (each with its eval cells) at once in worker processes, each with an
equal share of the free cores as torch threads: on CPU, small models use one core each better than two cores
together (the demo's cells: see docs/experiments.md). Cells write only their own folders, so the result is
the same; the report is written once every cell is done.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from advlora.adapters import method as adapter_methods
from advlora.config import dump_yaml, to_dict
from advlora.errors import AdvloraError
from advlora.experiments import backend
from advlora.experiments import cells as C
from advlora.experiments.report import render
from advlora.experiments.spec import GridConfig, TrainCell, eval_cells, evaluated_on, run_config_dict, train_cells
from advlora.experiments.summarize import collect
from advlora.io import atomic_write_text, write_json
from advlora.plugins import load_plugins
from advlora.progress import BatchProgress
from advlora.report.report import SectionItem
from advlora.runs import manifest
from advlora.runtime import quiet_libraries
from advlora.threads import auto_threads

log = logging.getLogger(__name__)


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(to_dict(obj), sort_keys=True, default=str).encode()).hexdigest()[:16]


def eval_fingerprint(cfg: GridConfig, cell) -> str:
    """What an eval cell's numbers depend on: the evaluation settings, its attacks and eps (not the sweep: a sweep
    cell's attack is among its attacks)."""
    ev = {k: v for k, v in vars(cfg.eval).items() if k not in ("attacks", "eps", "sweep_eps", "sweep_attack",
                                                                "batch_size")
          and not (k == "exit_k" and v is None)}    # unset: the fingerprint of grids made before the field
    return fingerprint({"eval": ev, "attacks": cell.attacks, "eps": cell.eps, "sanity": cell.sanity})


def run_grid(cfg: GridConfig, out: str | Path, *, title: str | None = None,
             intro: Callable[[dict], list[str]] | None = None,
             extra: Callable[[dict], list[tuple[str, list[SectionItem]]]] | None = None,
             extra_plots: Callable[[dict, Path], list[tuple[str, str]]] | None = None,
             report_only: bool = False, jobs: int = 1, progress: str = "auto") -> tuple[dict, str]:
    """Run every incomplete cell of ``cfg`` under ``out``, then summarise; returns (summary, terminal table).

    ``extra`` adds report sections (heading, bullet lines and tables); ``extra_plots(summary, out)`` draws more
    plots and returns
    (path relative to ``out``, caption) for each.

    ``report_only``: run nothing, only summarise the cells already complete (the rest are listed as missing).
    ``jobs``: train cells run at once, in worker processes (1: in this process). ``progress``: the train cells
    done (with their eval cells), a ``BatchProgress`` mode.
    """
    root = Path(out)
    if report_only and not (root / "cells").is_dir():
        raise AdvloraError(f"{root}: no cells to report on")
    t0 = time.perf_counter()
    todo = [] if report_only else start(cfg, root)
    if jobs > 1 and cfg.random_model:
        log.info("a random model (%s) is rebuilt differently in each process: running the cells in this one",
                 cfg.random_model)
        jobs = 1
    bar = BatchProgress(cfg.name, len(todo), mode=progress if todo else "off", unit="train cell")
    if jobs > 1 and len(todo) > 1:
        _run_parallel(cfg, root, todo, jobs, on_done=bar.update)
    else:
        cache: dict = {}
        for tc in todo:
            run_cells(cfg, root, tc, cache)
            bar.update()
        cache.clear()
    bar.close()
    summary = collect(cfg, root)
    summary["elapsed_s"] = time.perf_counter() - t0
    summary["manifest"] = manifest(seed=cfg.seeds[0])
    old = root / "summary.json"
    if report_only and old.is_file():  # a re-rendered report keeps the run that computed the cells
        prev = json.loads(old.read_text())
        summary["elapsed_s"], summary["manifest"] = prev.get("elapsed_s", 0.0), prev.get("manifest", {})
    return summary, finish(cfg, root, summary, title=title, intro=intro, extra=extra, extra_plots=extra_plots)


def run_cells(cfg: GridConfig, root: Path, tc: TrainCell, cache: dict | None = None,
              on_step: Callable[[int], None] | None = None) -> None:
    """One train cell, then its eval cells (each skipped when complete); ``on_step``: the trainer's hook."""
    cache = {} if cache is None else cache
    C.train_cell(cfg, tc, root, fingerprint=fingerprint(run_config_dict(cfg, tc)), on_step=on_step)
    for ec in eval_cells(cfg, tc):
        C.eval_cell(cfg, ec, root, cache, fingerprint=eval_fingerprint(cfg, ec))


def start(cfg: GridConfig, root: Path) -> list[TrainCell]:
    """Write grid.yaml and the manifest, refuse a folder whose complete cells another config made, and return
    the train cells with something left to run."""
    _start(cfg, root)
    cells = train_cells(cfg)
    for tc in cells:
        _check_train_cell(cfg, tc, root)
    return [tc for tc in cells if not all_complete(cfg, tc, root)]


def all_complete(cfg: GridConfig, tc: TrainCell, root: Path) -> bool:
    """Nothing left to run for ``tc`` (an eval cell of other settings counts as not done: it raises when run)."""
    def done(ec) -> bool:
        folder = root / "cells" / ec.key
        return C.is_complete(folder) and C.eval_result(folder).get("fingerprint") in (None, "",
                                                                                      eval_fingerprint(cfg, ec))
    return C.is_complete(root / "cells" / tc.key) and all(done(ec) for ec in eval_cells(cfg, tc))


def _worker_init(threads: int, level: int) -> None:
    quiet_libraries()
    load_plugins()  # a spawned worker imports the parent's plugins (named in ADVLORA_PLUGINS) before any cell
    logging.basicConfig(level=level, format="%(message)s")
    torch.set_num_threads(threads)


def _worker(cfg: GridConfig, root: str, tc: TrainCell) -> str:
    run_cells(cfg, Path(root), tc)
    return tc.key


def _run_parallel(cfg: GridConfig, root: Path, todo: list[TrainCell], jobs: int,
                  on_done: Callable[[], None] | None = None) -> None:
    """``todo`` in ``jobs`` spawned worker processes; the base model and data are made once, here, first;
    ``on_done()`` after each finished cell."""
    backend.base_model(cfg)  # pre-trains and caches tiny-clip / tiny-blip on first use, before the workers
    for ds in {d for tc in todo for d in evaluated_on(cfg, tc.dataset)}:
        backend.dataset(ds, cfg.eval.split, cfg.eval.limit)  # builds the embedded data on first use
    jobs = min(jobs, len(todo))
    threads = max(1, auto_threads() // jobs)
    log.info("running %d train cells in %d worker processes, %d torch thread(s) each", len(todo), jobs, threads)
    # evaluation-only cells fill the gaps
    todo = sorted(todo, key=lambda tc: not adapter_methods.get(tc.method.method).trains)
    errors = []
    ctx = multiprocessing.get_context("spawn")  # never fork a process that holds torch's thread pools
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                             initargs=(threads, logging.getLogger().getEffectiveLevel())) as ex:
        futures = {ex.submit(_worker, cfg, str(root), tc): tc for tc in todo}
        for f in as_completed(futures):
            try:
                f.result()
            except Exception as e:  # noqa: BLE001 - the other cells finish; the first error is raised below
                log.error("%s failed: %s", futures[f].key, e)
                errors.append(e)
            if on_done is not None:
                on_done()
    if errors:
        raise errors[0]


def finish(cfg: GridConfig, root: Path, summary: dict, *, title: str | None,
           intro: Callable[[dict], list[str]] | None,
           extra: Callable[[dict], list[tuple[str, list[SectionItem]]]] | None = None,
           extra_plots: Callable[[dict, Path], list[tuple[str, str]]] | None = None) -> str:
    """Draw the plots and write report.md, report.html and summary.json; returns the terminal table."""
    ds, seed = cfg.datasets[0], cfg.seeds[0]
    histories = {m.label: root / "cells" / TrainCell(m, ds, seed).key / "run" / "history.csv"
                 for m in cfg.methods if adapter_methods.get(m.method).trains}
    paras = intro(summary) if intro is not None else default_intro(cfg, summary)
    return render(summary, root, title=title or f"advlora grid: {cfg.name}", intro=paras, histories=histories,
                  extra=extra(summary) if extra else None,
                  extra_plots=extra_plots(summary, root) if extra_plots else None)


def default_intro(cfg: GridConfig, summary: dict) -> list[str]:
    budget = json.dumps(cfg.train, sort_keys=True) if cfg.train else "the trainer's defaults"
    return [f"Model `{summary['model']}`, data {', '.join(cfg.datasets)}, seeds {', '.join(map(str, cfg.seeds))}. "
            f"Every trained method shares one budget: `{budget}` (method-specific overrides: "
            + ("; ".join(f"{m.label}: `{json.dumps(m.config, sort_keys=True)}`" for m in cfg.methods if m.config)
               or "none") + ").",
            f"Evaluation: the {cfg.eval.split} split, PGD/APGD with {cfg.eval.steps} steps, white-box objective "
            f"`{cfg.eval.objective}` against the full caption gallery; "
            + (f"scores are ITC re-ranked by ITM on the top {summary['rerank_k']} (clean and adversarial alike)."
               if summary.get("rerank_k") else "scores are the dual encoder's cosine similarities."),
            "Learning rates (the trainer's per-method defaults unless the budget sets one): "
            + ", ".join(f"{label} {m['lr']:g}" for label, m in summary.get("methods", {}).items() if m.get("lr"))
            + ".",
            f"Command: `{summary.get('manifest', {}).get('command', '')}`; machine: "
            f"{summary.get('manifest', {}).get('platform', '')}; wall time of this invocation "
            f"{summary.get('elapsed_s', 0):.0f} s; the cells took {summary.get('cells_seconds', 0):.0f} s in all "
            "(training and evaluation, whichever invocation ran them)."]


def _start(cfg: GridConfig, root: Path) -> None:
    """Write grid.yaml (refusing a folder made by a different grid) and the manifest of this invocation."""
    root.mkdir(parents=True, exist_ok=True)
    old = root / "grid.yaml"
    text = dump_yaml(cfg)
    if old.exists() and old.read_text() != text:
        log.info("%s: grid.yaml differs from this config; complete cells are reused only when their own "
                 "configuration matches", root)
    atomic_write_text(old, text)
    write_json(root / "manifest.json", manifest(seed=cfg.seeds[0]))


def _check_train_cell(cfg: GridConfig, tc, root: Path) -> None:
    folder = root / "cells" / tc.key
    if C.is_complete(folder):
        have = C.train_info(folder).get("fingerprint")
        if have and have != fingerprint(run_config_dict(cfg, tc)):
            raise AdvloraError(f"{folder} was trained with a different configuration; use another --out "
                               "or delete that cell")
