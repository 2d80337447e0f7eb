"""One training step's model-facing parts: the attack on a batch and the loss module DDP wraps.

The trainer knows nothing of CLIP or BLIP; this module turns (clean images, adversarial images, captions) into
the loss: the training objective's (``advlora.training.objectives``: what the attack maximises and what the
update minimises; the model family's contrastive loss (``VLModel.contrastive_loss``: softmax InfoNCE, SigLIP's
sigmoid loss) reaches them through two calls here: ``contrastive`` in ``attack_batch``, per image, and ``itc``
in ``TrainTask.forward``, of the batch), BLIP's ITM on hard
negatives, and the adapter's regulariser.

On a classification set the model's output is the class-prompt classifier: the text side of every step is the
fixed (C, D) class embeddings (``class_embeddings``: each class name in the set's templates, prompt-ensembled,
encoded without gradient, so the text tower and the logit scale stay as they are; a method that learns the
classifier's text side, a prompt, has them re-encoded at every step, with gradient in the loss), the positives
are the (B, C) one-hot labels, and ``itc`` is the cross-entropy of logit_scale x cosine over the classes (TeCoA's loss;
the attacks maximise the same cross-entropy per image). Under DDP every rank holds a contiguous slice of the global
batch; features are gathered so that the loss is the global batch's, and the per-rank loss is scaled so that DDP's
gradient average equals the single-process gradient of that loss.
"""
from __future__ import annotations

import torch
from torch import nn

from advlora.attacks import registry
from advlora.attacks.attack_objective import Function
from advlora.attacks.objectives import LOSSES
from advlora.attacks.registry import AttackSpec
from advlora.errors import choices_error
from advlora.losses import itm_loss, per_image_contrastive, sample_hard_negatives
from advlora.models.prompts import for_templates
from advlora.runtime import eval_mode
from advlora.training import objectives
from advlora.training.config import CLEAN, AttackConfig


class Dist:
    """Rank, world size and feature gathering (identity on one process)."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate equal-sized slices of all ranks; gradient flows through this rank's slice only."""
        if self.world == 1:
            return x
        parts = self._all_gather(x.detach())
        parts[self.rank] = x
        return torch.cat(parts)

    def gather_ids(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate equal-sized slices of all ranks of a tensor without gradient (ids, masks)."""
        return x if self.world == 1 else torch.cat(self._all_gather(x))

    def _all_gather(self, x: torch.Tensor) -> list[torch.Tensor]:
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return parts

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's slice (rows) of a global-batch tensor."""
        b = x.shape[0] // self.world
        return x[self.rank * b:(self.rank + 1) * b]

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return x
        import torch.distributed as dist

        x = x.detach().clone()
        dist.all_reduce(x)
        return x


def positives_from_ids(text_ids: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """(B, B) positives of a global batch from its caption ids and caption-set ids: the same caption string,
    the same caption set (several views of one image), or the diagonal."""
    same = (text_ids[:, None] == text_ids[None, :]) | (group_ids[:, None] == group_ids[None, :])
    return same | torch.eye(len(text_ids), dtype=torch.bool, device=text_ids.device)


def class_embeddings(model, dataset) -> torch.Tensor:
    """(C, D) unit class embeddings of a classification set: its class names in its templates, prompt-ensembled
    (``advlora.models.prompts``; in its learned text prompt when the model has one), in eval mode and without
    gradient."""
    with eval_mode(model), torch.no_grad():
        return class_features(model, dataset).detach()


def class_features(model, dataset) -> torch.Tensor:
    """``class_embeddings`` with gradient, in the model's current mode: the class-prompt classifier of a method
    that learns its text side (``AdapterMethod.learns_class_text``)."""
    return for_templates(model, dataset.templates).encode_text(list(dataset.classes))


def shared_gradient(x: torch.Tensor, world: int) -> torch.Tensor:
    """``x`` with its gradient divided by ``world``: a tensor every rank computes whole (the class embeddings),
    so that DDP's average of ``world`` times the batch loss's gradient is the single-process one."""
    return x if world == 1 else x.detach() + (x - x.detach()) / world


def class_positives(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(B, C) bool: row i is the one-hot label of image i."""
    return torch.nn.functional.one_hot(labels.long(), classes).bool()


def attack_batch(model, cfg: AttackConfig, clean: torch.Tensor, text_all: torch.Tensor | None,
                 positives: torch.Tensor, generator: torch.Generator, objective: str = objectives.DEFAULT,
                 reference: torch.Tensor | None = None) -> torch.Tensor:
    """Adversarial images for this rank's ``clean`` slice: the attack of ``cfg`` (its ball ``cfg.threat.norm``)
    maximising the image objective of training objective ``objective`` (``advlora.training.objectives``; the
    loss ``cfg.attack_loss`` for one that declares ``attack_loss``) against the (gathered, fixed) batch
    captions, or the original model's features ``reference`` of ``clean``.

    The model runs in eval mode (restored after); the attack differentiates w.r.t. the images only.
    ``positives`` holds this rank's rows. Returns ``clean`` itself for clean training.
    """
    if cfg.name == CLEAN:
        return clean
    obj = objectives.get(objective)
    t = cfg.threat
    with eval_mode(model):
        scale = model.logit_scale.detach()
        loss = LOSSES[cfg.attack_loss] if obj.attack_loss else LOSSES["contrastive"]
        contrastive = None if text_all is None else (
            (lambda feats: per_image_contrastive(feats, text_all, scale, positives)) if loss is LOSSES["contrastive"]
            else (lambda feats: loss(feats @ text_all.t(), positives, scale)))
        fn = Function(obj.attack_objective(objectives.AttackInputs(model, clean, text_all, positives, scale,
                                                                  reference, cfg, contrastive)),
                      stationary=obj.stationary)
        return training_attack(cfg.name).attack(fn, clean, t, generator=generator, training=True).detach()


def training_attack(name: str) -> AttackSpec:
    """The declaration of training attack ``name``: a registered image attack on the caller's objective
    (``AttackSpec.trainable``); any other name is one error line listing those."""
    spec = registry.find(name)
    if spec is None or not spec.trainable:
        raise choices_error("training attack", name, [*(s.name for s in registry.specs() if s.trainable), CLEAN])
    return spec


class TrainTask(nn.Module):
    """The module DDP wraps: ``forward`` returns (loss to back-propagate, loss to report, its named parts).

    The loss is the training objective's (``advlora.training.objectives``), plus BLIP's ITM when the objective
    reads captions, plus the adapter's regulariser.
    """

    def __init__(self, model, cfg: AttackConfig, dist: Dist, regularizer=None,
                 objective: str = objectives.DEFAULT, classes: bool = False, class_text=None) -> None:
        """``classes``: the text side is a classification set's class embeddings (``text_fixed``, (C, D)) and the
        positives (B, C) one-hot labels: ``itc`` is the cross-entropy over the classes at the detached logit
        scale, and BLIP's ITM is left out (no captions). ``class_text``: ``() -> (C, D)`` the class embeddings
        with gradient, read when ``text_fixed`` is None (a method that learns the classifier's text side)."""
        super().__init__()
        self.classes = bool(classes)
        self.class_text = class_text
        self.model = model
        self.cfg = cfg
        self.dist = dist
        self.regularizer = regularizer
        self.objective = objectives.get(objective)
        self.itm_generator: torch.Generator | None = None

    def _image_parts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = self.model
        if m.has_itm and self.objective.captions and not self.classes:
            states = m.image_states(images)
            return m.embed_image_states(states), states
        if not self.objective.normalize:
            return m.encode_image(images, normalize=False), None
        return m.encode_image(images), None

    def forward(self, clean: torch.Tensor, adv: torch.Tensor, tokens: dict | None, text_fixed: torch.Tensor | None,
                positives: torch.Tensor, valid: torch.Tensor | None = None, reference: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Args: this rank's clean and adversarial images and tokens (None: an objective without captions); the
        gathered text features when the text tower is not trained (else None: encoded here with gradient); the
        global (B, B) positives; the global (B,) rows that are real samples (None: all; padding rows are left out
        of every term, by indexing, so that every rank's parameters stay in the graph even when all its rows are
        padding); the original model's features of this rank's clean images (objectives with ``reference``)."""
        m, cfg, d, obj = self.model, self.cfg, self.dist, self.objective
        b = adv.shape[0]
        keep = torch.ones(b * d.world, dtype=torch.bool, device=adv.device) if valid is None else valid
        mine = d.local(keep)
        n = int(keep.sum())
        # without padding nothing is indexed (no copies of the gathered features)
        real = (lambda t: t) if valid is None else (lambda t: t[keep])
        use_clean = obj.clean_features and cfg.name != CLEAN
        feats, states = self._image_parts(torch.cat([clean, adv]) if use_clean else adv)
        adv_feats = feats[b:] if use_clean else feats
        adv_states = None if states is None else (states[b:] if use_clean else states)
        text_all = None
        if obj.captions:
            if text_fixed is not None:
                text_all = text_fixed
            elif self.classes and self.class_text is not None:
                text_all = shared_gradient(self.class_text(), d.world)
            else:
                text_all = d.gather(m.encode_text(tokens))
        scale = m.logit_scale.detach() if self.classes else m.logit_scale
        per_sample = torch.zeros((), device=adv.device)   # sums over this rank's samples, / global count
        pos = positives if valid is None else positives[keep] if self.classes else positives[keep][:, keep]

        def itc(image_feats: torch.Tensor) -> torch.Tensor:
            if self.classes:   # image -> class prompts only: the classifier's cross-entropy, mean over the batch
                return per_image_contrastive(real(d.gather(image_feats)), text_all, scale, pos).mean()
            return m.contrastive_loss(real(d.gather(image_feats)), real(text_all), pos, scale)

        text = None if text_all is None else text_all if self.classes else real(text_all)
        terms = obj.loss(objectives.LossInputs(
            adv_feats, feats[:b] if use_clean else None, text, scale, itc, mine, n, reference, cfg,
            padded=valid is not None))
        parts: dict[str, torch.Tensor] = dict(terms.parts)
        if terms.per_image is not None:
            per_sample = per_sample + terms.per_image
        if adv_states is not None:
            if bool(mine.all()) or not bool(mine.any()):   # no real row: kept in the graph, times 0
                itm = self._itm(adv_states, adv_feats, text_all, tokens, positives) * float(bool(mine.any()))
            else:                                           # padding rows: ITM on this rank's real rows
                itm = self._itm(adv_states[mine], adv_feats[mine], text_all, {k: v[mine] for k, v in tokens.items()},
                                positives, rows=mine)
            parts["itm"] = itm / d.world
            per_sample = per_sample + parts["itm"]
        reg = self.regularizer(m) if self.regularizer is not None else torch.zeros((), device=adv.device)
        parts["reg"] = reg
        backward = d.world * (terms.batch + per_sample) + reg
        report = terms.batch / d.world + per_sample + reg / d.world
        return backward, report, {k: float(v.detach()) for k, v in parts.items()}

    def _itm(self, states: torch.Tensor, img_feats: torch.Tensor, text_all: torch.Tensor, tokens: dict,
             positives: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """BLIP's ITM on this rank's batch (``rows``: the subset of its rows given): positive pairs plus one hard
        negative text per image and one hard negative image per text, drawn by ITC similarity (a mean over the
        3b pairs)."""
        m, d = self.model, self.dist
        b = d.local(positives).shape[0]
        pos = d.local(positives)[:, d.rank * b:(d.rank + 1) * b]
        local_text = d.local(text_all)
        if rows is not None:
            pos, local_text = pos[rows][:, rows], local_text[rows]
        b = states.shape[0]
        sim = img_feats @ local_text.t()
        neg_txt, neg_img = sample_hard_negatives(sim, pos, self.itm_generator)
        img_idx = torch.cat([torch.arange(b), torch.arange(b), neg_img.cpu()])
        txt_idx = torch.cat([torch.arange(b), neg_txt.cpu(), torch.arange(b)])
        tok = {k: v[txt_idx.to(v.device)] for k, v in tokens.items()}
        logits = m.itm_logits_from_states(states[img_idx.to(states.device)], tok)
        labels = pos[img_idx.to(pos.device), txt_idx.to(pos.device)].long().to(logits.device)
        return itm_loss(logits, labels)


__all__ = ["Dist", "TrainTask", "attack_batch", "class_embeddings", "class_features", "class_positives",
           "positives_from_ids", "shared_gradient"]
