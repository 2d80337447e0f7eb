"""``train(config, out, resume=False) -> TrainResult``: adversarial training of any adapter method.

The loop (minGPT-style) knows only batches, an attack, a loss module, an optimiser and checkpoints; the model
specifics live in ``advlora.training.step``. The same code runs on CPU, one GPU, or DDP under ``torchrun``:
each rank takes a contiguous slice of the global batch. Every step reseeds the trainer's generators from
(seed, step, rank), so that a resumed run draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

import copy
import math
import resource
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advlora.adapters import alpha_values, regularization_loss, save_adapter
from advlora.adapters import method as adapter_methods
from advlora.data.classification import ClassificationDataset
from advlora.data.fewshot import few_shot, few_shot_record, write_few_shot
from advlora.data.shards import DIGEST_MOD, key_digest
from advlora.errors import AdvloraError
from advlora.io import atomic_dir, write_json
from advlora.models.text_prompt import prompt_disabled
from advlora.models.video import for_dataset
from advlora.preempt import Preempted, StopRequest, stop_requests
from advlora.progress import BatchProgress
from advlora.runs import execution
from advlora.runtime import eval_mode
from advlora.training import objectives
from advlora.training import setup as S
from advlora.training.checkpoint import Checkpoints, TrainerState
from advlora.training.config import CLEAN, RunConfig
from advlora.training.data import EpochSampler, ShardBatches, TrainBatches
from advlora.training.logs import RunLogger, alpha_row
from advlora.training.reference import OriginalModel
from advlora.training.step import (
    Dist,
    TrainTask,
    attack_batch,
    class_embeddings,
    class_features,
    class_positives,
    positives_from_ids,
    training_attack,
)
from advlora.training.validate import validate


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    trainable_params: int
    total_params: int
    train_time_s: float
    steps: int
    history: Path
    efficiency: dict = field(default_factory=dict)

    @property
    def trainable(self) -> int:
        return self.trainable_params


class _Timer:
    def __init__(self, totals: dict[str, float]) -> None:
        self.totals = totals

    def __call__(self, key: str, t0: float) -> float:
        t = time.perf_counter()
        self.totals[key] = self.totals.get(key, 0.0) + t - t0
        return t


def train(config: RunConfig, out: str | Path, resume: bool = False, *, model=None, argv: list[str] | None = None,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``config`` into the run folder ``out`` (``resume``: continue from its last checkpoint).

    Args:
        model: a loaded base model to copy instead of loading ``config.model`` (it is not modified).
        argv: command line recorded in the manifest.
        on_step: called with the step number after every optimiser step, before its checkpoint (progress
            reporting; tests use it to slow a run down).
    """
    config = copy.deepcopy(config)
    out = Path(out)
    threads = torch.get_num_threads()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    try:
        return _Run(config, out, resume, model, argv, on_step).run()
    finally:
        torch.set_num_threads(threads)


class _Run:
    def __init__(self, config: RunConfig, out: Path, resume: bool, base, argv, on_step=None) -> None:
        self.cfg, self.out, self.on_step = config, out, on_step
        self.acc = S.make_accelerator(config.train)
        self.main = self.acc.is_main_process
        self.dist = Dist(self.acc.process_index, self.acc.num_processes)
        torch.manual_seed(config.train.seed)
        how = execution(processes=self.acc.num_processes, device=self.acc.device, dtype="float32",
                        mixed_precision=self.acc.mixed_precision)
        ckpt = S.prepare_folder(out, config, resume, self.main, argv, how) if self.main else None
        self.acc.wait_for_everyone()
        if not self.main and resume:
            found = sorted((out / "checkpoints").glob("step-*"))
            ckpt = found[-1] if found else None
        self.objective = objectives.get(config.train.objective)
        self.model = S.build_model(config, self.acc.device, base)
        self.counts = S.param_counts(self.model)
        d = config.data
        self.classes: torch.Tensor | None = None   # a classification set's (C, D) class embeddings (_prepare_training)
        self.learns_classes = False                 # they are re-encoded every step (a prompt method)
        self.attack_classes: torch.Tensor | None = None   # the constant ones the attack reads (apt-constant)
        # the schedule: steps per epoch and the batch of each step (a data set's sampler, or the shard reader)
        if d.shots is not None and d.sharded:
            raise AdvloraError(f"--shots samples the images of a classification set; --data {d.name} names shards")
        if d.sharded:
            self.train_data = None
            self.net = self.model
            self.schedule = ShardBatches(d.name, self.model.image_size, config.train.batch_size,
                                         seed=config.train.seed, rank=self.dist.rank, world=self.dist.world,
                                         config=d.loader, mode=d.shard_mode,
                                         pin_memory=self.acc.device.type == "cuda")
        else:
            self.train_data = S.dataset(d, d.train_split, d.train_limit, config.train.seed)
            if d.shots is not None:
                self.train_data = self._few_shot(self.train_data)
            # what the attack and the loss see: the model itself, or (video sets) its frame-pooling view over the
            # same weights; checkpoints, adapters and alphas stay keyed by the base model
            self.net = for_dataset(self.model, self.train_data)
            if self.objective.captions and not self.train_data.captions:
                raise AdvloraError(f"--data {d.name}: no captions, and objective {self.objective.name} reads them "
                                   f"(objectives that train from images alone: "
                                   f"{', '.join(n for n in objectives.names() if not objectives.get(n).captions)})")
            self.schedule = EpochSampler(self.train_data, config.train.batch_size, config.train.seed,
                                         captions=self.objective.captions)
        self.val_data = S.dataset(d, d.val_split, config.eval.val_limit, name=d.eval_set)
        if self.schedule.batch_size % self.dist.world:
            raise AdvloraError(f"train.batch_size {self.schedule.batch_size} is not divisible by the "
                               f"{self.dist.world} processes")
        self.total = config.train.steps or self.schedule.total_steps(config.train.epochs)
        self.trainable = self.counts["trainable"] > 0
        self.reference = None
        if self.objective.reference and self.trainable:   # phi_0: the model as it was before training
            self.reference = OriginalModel(self.model, lambda: S.fresh_base(config, self.acc.device, base),
                                           wrap=lambda m: m if self.train_data is None else
                                           for_dataset(m, self.train_data))
        self.gens = {"attack": torch.Generator(), "itm": torch.Generator()}
        self.state: dict[str, Any] = {"step": 0, "train_time_s": 0.0, "times": {}, "validated_epoch": -1,
                                      "epochs": {}}
        if self.trainable:
            self._prepare_training(ckpt)
        if resume and self.main:
            print(f"resumed from {ckpt} at step {self.state['step']}" if ckpt is not None else
                  f"--resume: no checkpoint in {out}; starting from step 0", file=sys.stderr)

    # ---- set-up ---------------------------------------------------------------------------------------------
    def _few_shot(self, data):
        """The k-shot sample of ``data`` (``data.shots``, ``data.shot_seed``), recorded in the run folder."""
        d = self.cfg.data
        if not isinstance(data, ClassificationDataset):
            raise AdvloraError(f"--shots: --data {d.name} is not a classification set (class folders, emoji-cls, "
                               f"emoji-group, digits)")
        if self.main:
            write_few_shot(self.out, few_shot_record(data, d.shots, d.shot_seed))
        return data.subset(few_shot(data, d.shots, d.shot_seed))

    def _prepare_training(self, ckpt: Path | None) -> None:
        cfg = self.cfg
        optimizer, self.scheduler = S.optimizer_and_schedule(self.model, cfg, self.total)
        self.optimizer = self.acc.prepare(optimizer)
        self.checkpoints = Checkpoints(self.acc, self.out / "checkpoints", self.model,
                                       [self.scheduler, TrainerState(self.state, self.gens)], cfg.train.keep_last,
                                       self._adapter_saver())
        if isinstance(self.train_data, ClassificationDataset) and self.objective.captions:
            self.classes = class_embeddings(self.net, self.train_data).to(self.acc.device)
            # a prompt method learns the classifier's text side: re-encoded every step (``learns_class_text``)
            self.learns_classes = adapter_methods.get(cfg.method).learns_class_text
            if self.objective.attack_text == "constant":   # APT's constant prompt: the tower without it, once
                with prompt_disabled(self.net):
                    self.attack_classes = class_embeddings(self.net, self.train_data).to(self.acc.device)
        learned = (lambda: class_features(self.net, self.train_data)) if self.learns_classes else None
        self.task = TrainTask(self.net, cfg.attack, self.dist, regularization_loss, objective=self.objective.name,
                              classes=self.classes is not None, class_text=learned)
        self.task.itm_generator = self.gens["itm"]
        self.ddp = self.acc.prepare(self.task)
        self.text_trained = "text" in S.trainable_towers(self.model) or "other" in S.trainable_towers(self.model)
        if self.train_data is None:
            self.batches = self.schedule
        else:
            self.batches = TrainBatches(self.train_data, self.schedule, self.model.image_size, rank=self.dist.rank,
                                        world=self.dist.world, config=cfg.data.loader,
                                        pin_memory=self.acc.device.type == "cuda")
        if ckpt is not None:
            self.checkpoints.load(ckpt)
        self.alpha_names = sorted(self._alphas())
        self.logger = RunLogger(self.out, [f"alpha/{k}" for k in self.alpha_names] + self._tower_columns(),
                                enabled=self.main, tensorboard=cfg.train.tensorboard,
                                resume_step=self.state["step"] if ckpt is not None else None)

    def _alphas(self) -> dict[str, float]:
        return alpha_values(self.model)

    def _tower_of(self, layer: str) -> str | None:
        return self.model.tower_of(S.strip_prefix(layer))

    def _tower_columns(self) -> list[str]:
        towers = {self._tower_of(k) or "other" for k in self.alpha_names}
        return [f"alpha_mean/{t}" for t in sorted(towers)]

    # ---- the loop -------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        try:
            if self.trainable:
                with stop_requests() as stop:
                    self._loop(stop)
            metrics, eff = self._finish()
        finally:
            if self.trainable:
                self.logger.close()
        self.acc.end_training()
        return TrainResult(self.out, metrics, self.counts["trainable"], self.counts["total"],
                           self.state["train_time_s"], self.state["step"], self.out / "history.csv", eff)

    def _loop(self, stop: StopRequest | None = None) -> None:
        """Steps until ``total``; a stop signal (``advlora.preempt``) ends the loop after its step's
        validation and checkpoint with ``Preempted``."""
        from tqdm.auto import tqdm

        cfg, st = self.cfg.train, self.state
        mode = cfg.progress if self.main else "off"
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        show = mode == "bar"
        log = BatchProgress("train", self.total, mode="log", initial=st["step"], unit="step") if mode == "log" \
            else None
        sched = self.schedule
        ebar = tqdm(total=sched.position(self.total - 1)[0] + 1, initial=sched.position(st["step"])[0],
                    desc="epochs", disable=not show, position=0)
        sbar = tqdm(total=self.total, initial=st["step"], desc="steps", disable=not show, position=1, leave=False)
        timer = _Timer(st["times"])
        while st["step"] < self.total:
            t_start = time.perf_counter()
            batch = self.batches.batch(st["step"])
            timer("data", t_start)                     # waiting for the batch: efficiency.json's data share
            loss, parts = self._step(batch, timer)
            st["step"] += 1
            st["train_time_s"] += time.perf_counter() - t_start
            if self.on_step is not None:
                self.on_step(st["step"])
            sbar.update(1)
            sbar.set_postfix(epoch=batch.epoch, loss=f"{loss:.4f}")
            if log is not None:
                log.update(1)
            if st["step"] % cfg.log_every == 0 or st["step"] == self.total:
                self._log(batch, loss, parts, timer)
            if batch.index == sched.epoch_steps(batch.epoch) - 1:
                ebar.update(1)
                if (batch.epoch + 1) % self.cfg.eval.every_epochs == 0:
                    self._validate(batch.epoch)
            saved = st["step"] == self.total or bool(cfg.checkpoint_every and st["step"] % cfg.checkpoint_every == 0)
            if saved:
                self._checkpoint()
            signum = self._stop_signal(stop)
            if signum and st["step"] < self.total:
                if not saved:
                    self._checkpoint()
                sbar.close()
                ebar.close()
                if log is not None:
                    log.close()
                raise Preempted(signum, st["step"], str(self.checkpoints.path(st["step"])))
        if st["validated_epoch"] < sched.position(self.total - 1)[0]:
            self._validate(sched.position(self.total - 1)[0])
        sbar.close()
        ebar.close()
        if log is not None:
            log.close()

    def _stop_signal(self, stop: StopRequest | None) -> int:
        """The stop signal any process received (0: none); every process takes the same decision."""
        local = float(stop.signum or 0) if stop is not None else 0.0
        if self.dist.world == 1:
            return int(local)
        got = float(self.dist.sum(torch.tensor([local], device=self.acc.device)).max())
        return int(local or (signal.SIGTERM if got else 0))

    def _step(self, batch, timer: _Timer) -> tuple[float, dict]:
        model, d, acfg = self.net, self.dist, self.cfg.attack
        seed = (self.cfg.train.seed * 1_000_003 + self.state["step"]) * 64 + d.rank
        for i, g in enumerate(self.gens.values()):
            g.manual_seed(seed * 8 + i)
        torch.manual_seed(seed * 8 + 7)
        dev = self.acc.device
        clean = batch.pixels.to(dev).float().div_(255.0)
        captions = self.objective.captions
        tokens = model.tokenize(batch.texts) if captions and self.classes is None else None
        if self.classes is not None:    # the class-prompt classifier: one-hot labels over the fixed classes
            labels = self.train_data.labels[batch.images]
            positives, valid = class_positives(labels, len(self.classes)).to(dev), None
        elif batch.positives is not None:
            positives, valid = batch.positives.to(dev), None
        else:   # shard batches: each rank knows its own captions only
            ids = d.gather_ids(torch.stack([batch.text_ids, batch.group_ids, batch.valid.long()], 1).to(dev))
            positives, valid = positives_from_ids(ids[:, 0], ids[:, 1]), ids[:, 2].bool()   # one collective
            self._count(batch)
        t0 = time.perf_counter()
        obj = self.objective.name
        with self.acc.autocast():
            text_all = ref = None
            if self.classes is not None:
                current = class_embeddings(model, self.train_data) if self.learns_classes else self.classes
                text_all = current if self.attack_classes is None else self.attack_classes
            elif captions:
                constant = self.objective.attack_text == "constant"
                with eval_mode(model), torch.no_grad(), prompt_disabled(model) if constant else nullcontext():
                    text_all = d.gather(model.encode_text(batch.texts if constant else tokens))
            ref_of_adv = self.objective.reference_images == "adv"
            if self.reference is not None and not ref_of_adv:
                ref = self.reference.encode_image(clean, normalize=self.objective.normalize)
            if valid is None:
                adv = attack_batch(model, acfg, clean, text_all, d.local(positives), self.gens["attack"],
                                   objective=obj, reference=ref)
            else:       # the real rows against the real captions; padding rows stay clean
                adv, mine = clean.clone(), d.local(valid)
                if bool(mine.any()):
                    adv[mine] = attack_batch(model, acfg, clean[mine], None if text_all is None else text_all[valid],
                                             d.local(positives)[mine][:, valid], self.gens["attack"],
                                             objective=obj, reference=None if ref is None else ref[mine])
            if self.reference is not None and ref_of_adv:   # the original model on the adversarial images
                ref = self.reference.encode_image(adv, normalize=self.objective.normalize)
        t1 = timer("attack", t0)
        self.optimizer.zero_grad(set_to_none=True)   # nothing of the attack reaches the update
        self.task.train()
        with self.acc.autocast():
            if self.classes is not None:   # the fixed class embeddings, or (None) re-encoded with gradient
                fixed = None if self.learns_classes else self.classes
            else:                          # the batch captions, encoded with gradient when the text side trains
                fixed = text_all if not self.text_trained and self.objective.attack_text == "current" else None
            backward, report, parts = self.ddp(clean, adv, tokens, fixed,
                                               positives, valid, ref)
        loss = float(d.sum(report.detach()))
        if not math.isfinite(loss):
            last = sorted((self.out / "checkpoints").glob("step-*"))
            keep = f"; the last good checkpoint is {last[-1]}" if last else "; no checkpoint was written yet"
            raise AdvloraError(f"training stopped: non-finite loss ({loss}) at step {self.state['step'] + 1}{keep}")
        self.acc.backward(backward)
        t2 = timer("forward_backward", t1)
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                           self.cfg.train.grad_clip)
        self.lrs = {g.get("name"): g["lr"] for g in self.optimizer.param_groups}   # the lr of this step
        self.optimizer.step()
        self.scheduler.step()
        timer("optimizer", t2)
        return loss, parts

    def _count(self, batch) -> None:
        """Per epoch, the real samples of every rank, their key digest and the padding rows (``efficiency.json``:
        an exact epoch of shards has the source's count and digest; the padding is what unequal shards cost)."""
        pad = len(batch.valid) - len(batch.keys)
        local = torch.tensor([len(batch.keys), key_digest(batch.keys), pad], dtype=torch.long, device=self.acc.device)
        count, digest, pad = (int(v) for v in self.dist.sum(local).cpu())
        seen = self.state.setdefault("epochs", {}).setdefault(str(batch.epoch), [0, 0, 0])  # older checkpoints: none
        seen[0], seen[1], seen[2] = seen[0] + count, (seen[1] + digest) % DIGEST_MOD, seen[2] + pad

    def _log(self, batch, loss: float, parts: dict, timer: _Timer) -> None:
        st = self.state
        n = max(1, st["step"])
        row = {"step": st["step"], "epoch": batch.epoch, "loss": loss, **{k: parts.get(k) for k in
                                                                           ("itc", "kl", "itm", "reg")}}
        row.update(lr=self.lrs.get("weights"), alpha_lr=self.lrs.get("alpha"))
        for k in ("attack", "forward_backward", "optimizer"):
            row[f"time_{k}_s"] = st["times"].get(k, 0.0) / n
        if self.alpha_names:
            row.update(alpha_row(self._alphas(), self._tower_of))
        self.logger.step(row)

    def _validate(self, epoch: int) -> None:
        self.state["validated_epoch"] = epoch
        if self.main:
            ev = self.cfg.eval
            threat = self.cfg.attack.eval_threat(ev.eps, ev.val_steps, 0) if ev.robust else None
            res = validate(self.model, self.val_data, threat, attack=ev.attack, rerank_k=0,
                           batch_size=ev.batch_size)
            self.logger.epoch({"epoch": epoch, "step": self.state["step"], "clean_r_mean": res["clean"]["r_mean"],
                               "robust_r_mean": res.get("robust", {}).get("r_mean"), "threat": res.get("threat")})
        self.acc.wait_for_everyone()

    def _checkpoint(self) -> None:
        if self.main:
            self.checkpoints.save(self.state["step"])
        self.acc.wait_for_everyone()

    def _adapter_saver(self):
        if not adapter_methods.get(self.cfg.method).trains:
            return None
        return lambda path: save_adapter(self.model, path)

    # ---- the end --------------------------------------------------------------------------------------------
    def _finish(self) -> tuple[dict, dict]:
        cfg, ev = self.cfg, self.cfg.eval
        metrics, eff = {}, {}
        if self.main:
            test = S.dataset(cfg.data, cfg.data.test_split, ev.test_limit, name=cfg.data.eval_set)
            threat = cfg.attack.eval_threat(ev.eps, ev.test_steps, 0)
            res = validate(self.model, test, threat, attack=ev.attack, rerank_k=ev.rerank_k,
                           batch_size=ev.batch_size)
            metrics = {**res, "attack": ev.attack, "split": cfg.data.test_split, "limit": ev.test_limit,
                       "n_images": len(test), "n_texts": len(test.captions), "kind": test.kind,
                       "method": cfg.method, "objective": cfg.train.objective,
                       "steps": self.state["step"], "train_attack": self._train_attack()}
            eff = self._efficiency()
            saver = self._adapter_saver()
            if saver is not None:
                with atomic_dir(self.out / "adapter") as tmp:
                    saver(tmp)
            write_json(self.out / "efficiency.json", eff)
            write_json(self.out / "metrics.json", metrics)
        self.acc.wait_for_everyone()
        return metrics, eff

    def _train_attack(self) -> str:
        a = self.cfg.attack
        if a.name == CLEAN:
            return "clean training"
        steps = training_attack(a.name).training_steps
        t = a.threat.replace(steps=a.threat.steps if steps is None else steps, seed=0)
        obj = self.cfg.train.objective
        loss = a.attack_loss if objectives.get(obj).attack_loss else "contrastive"
        return t.describe(a.name) + ("" if obj == objectives.DEFAULT else f" objective={obj}") + \
            ("" if loss == "contrastive" else f" attack-loss={loss}")

    def _efficiency(self) -> dict:
        st = self.state
        n = max(1, st["step"])
        times = {k: v / n for k, v in st["times"].items()}
        if torch.cuda.is_available() and self.acc.device.type == "cuda":
            peak, kind = torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
        else:
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"
        return {**self.counts, "method": self.cfg.method, "steps": st["step"], "train_time_s": st["train_time_s"],
                "peak_memory_mb": peak, "memory": kind, "step_time_s": {**times, "total": sum(times.values())},
                "batch_size": self.schedule.batch_size, "processes": self.dist.world, "device": str(self.acc.device),
                "attack": self._train_attack(),
                **({"epochs": {e: {"samples": c, "key_digest": g, "padding": pad}
                                for e, (c, g, pad) in st["epochs"].items()}}
                   if st.get("epochs") else {})}


__all__ = ["TrainResult", "train"]
