"""Pre-train a tiny model of any family (CLIP, BLIP, SigLIP) from scratch on the emoji source part, and save it as a
hub checkpoint.

The tiny models learn only ``emoji-source`` (emoji up to Emoji 5.0); ``emoji-downstream`` (the emoji added
since) is the task they are adapted to, as a web-pre-trained CLIP is adapted to COCO. ``load_model`` here is
``advlora.models.load_model`` with the builder that pre-trains ``tiny-clip`` / ``tiny-blip`` / ``tiny-siglip`` on
first use. ``build_tiny`` is that builder: ``advlora.models.family`` names it by reference and imports it only
when a tiny default is first built (models never import training), so ``advlora.models.load_model`` pre-trains
them too.

The tokenizer is a WordPiece vocabulary trained on the train captions; the model is ``advlora.models.tiny``'s
``tiny`` size. Each step draws a batch of distinct emoji, one of its pre-rendered train views each and one of
its captions (the name, or an alias), so that a batch never holds a false negative.

The loss is the family's own (``VLModel.contrastive_loss``): CLIP's symmetric InfoNCE with a learnable
temperature, SigLIP's sigmoid loss with its bias. Optionally (softmax families; ``bank=True``, off by default:
it slowed learning in our runs) each side is also contrasted with a per-caption / per-emoji memory of the other side's
most recent embeddings. BLIP: the same ITC loss plus ITM on hard negatives sampled from the ITC similarities,
as BLIP trains.
AdamW, linear warm-up then cosine decay. The result is written with ``save_model`` into a temporary folder
renamed into place, so ``load_model("tiny-clip")`` reads it exactly as it reads a hub checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from advlora.data import load_dataset
from advlora.errors import choices_error
from advlora.evaluation import evaluate_clean
from advlora.io import atomic_dir, write_json
from advlora.models import VLModel, get_family, resolve_model_path, save_model, tiny
from advlora.models import load_model as _load_cached
from advlora.models.tiny import SIZES
from advlora.models.tokenizer import build_tokenizer
from advlora.progress import BatchProgress
from advlora.threads import auto_threads, torch_threads

log = logging.getLogger(__name__)


#: the data set the tiny models are pre-trained on, and the one they are adapted to (never seen in pre-training)
PRETRAIN_DATA = "emoji-source"
DOWNSTREAM_DATA = "emoji-downstream"


@dataclass
class PretrainConfig:
    """Hyper-parameters of the tiny models' pre-training (defaults: the shipped tiny-clip / tiny-blip)."""

    size: str = "tiny"
    epochs: int = 55                # passes over the emoji (each pass: every emoji once, one random view)
    batch_size: int = 256           # 550 steps on the 2,609 emoji-source emoji (times: docs/training.md)
    lr: float = 2.5e-3
    weight_decay: float = 0.05
    warmup: float = 0.1             # fraction of the steps
    betas: tuple[float, float] = (0.9, 0.98)
    vocab_size: int = 2000
    max_length: int = 32
    name_prob: float = 0.6          # chance of drawing the name rather than one of the aliases
    bank: bool = False              # also contrast with a memory of all captions / emoji (hurt in our runs)
    itm_weight: float = 1.0         # BLIP only
    threads: int | None = None      # torch threads (None: the cores other processes leave free); see train_model
    text_buckets: int = 3           # encode each batch's captions in this many length buckets (less padding)
    limit: int | None = None        # only the first N emoji (tests)
    size_overrides: dict = field(default_factory=dict)


@dataclass
class PretrainResult:
    out: Path
    seconds: float
    steps: int
    metrics: dict[str, dict[str, float]]
    model: object = None  # the trained VLModel, as saved
    threads: int = 1      # torch threads the training loop ran on


def default_config(arch: str) -> PretrainConfig:
    """The shipped tiny default's configuration: ``PretrainConfig`` with the family's ``pretrain`` overrides."""
    return PretrainConfig(**get_family(arch).pretrain)


# ---- data ------------------------------------------------------------------------------------------------
class EmojiTrainSet:
    """Train views as uint8 tensors, grouped by emoji (its caption set), with pre-tokenized captions."""

    def __init__(self, dataset, image_size: int, limit: int | None = None) -> None:
        groups: dict[tuple[str, ...], int] = {}
        cls_of_image = []
        for caps in dataset.img2txt:
            key = tuple(dataset.captions[j] for j in caps)
            cls_of_image.append(groups.setdefault(key, len(groups)))
        keep = list(range(len(dataset))) if limit is None else [i for i, c in enumerate(cls_of_image) if c < limit]
        self.images = dataset._load_uint8(image_size, True)[torch.as_tensor(keep)]
        cls = torch.as_tensor([cls_of_image[i] for i in keep])
        self.classes = [list(k) for k in groups][: (limit or len(groups))]
        self.views = [torch.nonzero(cls == c).flatten() for c in range(len(self.classes))]
        self.captions = [c for caps in self.classes for c in caps]
        self.caption_class = torch.as_tensor([k for k, caps in enumerate(self.classes) for _ in caps])
        starts = torch.as_tensor([0] + [len(c) for c in self.classes]).cumsum(0)
        self.caption_start, self.caption_count = starts[:-1], torch.as_tensor([len(c) for c in self.classes])

    def __len__(self) -> int:
        return len(self.classes)

    def sample(self, classes: torch.Tensor, name_prob: float, g: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """One random view (float pixels) and one caption index per class in ``classes``."""
        views = torch.stack([self.views[c][torch.randint(len(self.views[c]), (1,), generator=g)]
                             for c in classes.tolist()]).flatten()
        n = self.caption_count[classes]
        alias = 1 + (torch.rand(len(classes), generator=g) * (n - 1).clamp(min=1)).long().clamp(max=n - 1)
        use_name = (torch.rand(len(classes), generator=g) < name_prob) | (n == 1)
        cap = self.caption_start[classes] + torch.where(use_name, torch.zeros_like(alias), alias)
        return self.images[views].float().div_(255.0), cap


class Tokens:
    """All captions tokenized once; a batch is sliced to its longest caption (padding "longest"), or every
    caption keeps ``max_length`` tokens (padding "max_length": models pooled at the last position)."""

    def __init__(self, tokenizer, captions: list[str], max_length: int, padding: str = "longest") -> None:
        enc = tokenizer(captions, padding=True if padding == "longest" else padding, truncation=True,
                        max_length=max_length, return_tensors="pt")
        self.ids, self.mask = enc["input_ids"], enc["attention_mask"]
        self.slice = padding == "longest"

    def __call__(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = self.mask[idx]
        n = int(mask.sum(1).max()) if self.slice else mask.shape[1]
        return {"input_ids": self.ids[idx, :n], "attention_mask": mask[:, :n]}


# ---- losses ----------------------------------------------------------------------------------------------
def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log(sum of softmax over the row's positive columns)."""
    return (logits.logsumexp(1) - logits.masked_fill(~positive, float("-inf")).logsumexp(1)).mean()


def contrastive_loss(model, img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, classes: torch.Tensor,
                     cap_idx: torch.Tensor, data: EmojiTrainSet, banks: dict | None) -> torch.Tensor:
    """The family's loss of a batch of distinct emoji (``model.contrastive_loss``); with ``banks`` (softmax
    families), also each side against the memory of every caption / every emoji of the other side (keys all
    equally stale, so freshness gives nothing away)."""
    loss = model.contrastive_loss(img, txt, scale=scale)
    if banks is None:
        return loss
    pos_i2t = data.caption_class.unsqueeze(0) == classes.unsqueeze(1)   # every caption of the image's emoji
    i2t = multi_positive_nce(scale * img @ banks["text"].t(), pos_i2t)
    t2i = F.cross_entropy(scale * txt @ banks["image"].t(), classes)
    banks["text"] = banks["text"].index_copy(0, cap_idx, txt.detach())   # out of place: the old is saved
    banks["image"] = banks["image"].index_copy(0, classes, img.detach())
    return (loss + (i2t + t2i) / 2) / 2


def itm_loss(model, states: torch.Tensor, tokens: dict, sim: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """BLIP's ITM: positives, plus for each image a hard negative caption and for each caption a hard negative
    image, sampled with probability softmax(ITC similarity) among the batch's other (distinct) emoji."""
    with torch.no_grad():
        w = sim.float().softmax(1).fill_diagonal_(0) + 1e-9
        neg_txt = torch.multinomial(w, 1, generator=g).flatten()
        w = sim.t().float().softmax(1).fill_diagonal_(0) + 1e-9
        neg_img = torch.multinomial(w, 1, generator=g).flatten()
    b = len(states)
    all_states = torch.cat([states, states, states[neg_img]])
    pick = torch.cat([torch.arange(b), neg_txt, torch.arange(b)])
    toks = {k: v[pick] for k, v in tokens.items()}
    logits = model.itm_logits_from_states(all_states, toks)
    labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long()
    return F.cross_entropy(logits, labels)


# ---- training --------------------------------------------------------------------------------------------
def build_model(arch: str, captions: list[str], cfg: PretrainConfig, seed: int):
    """A freshly initialised wrapper with a tokenizer trained on ``captions``."""

    tok = build_tokenizer(captions, vocab_size=cfg.vocab_size, max_length=cfg.max_length)
    if cfg.size_overrides:
        tiny.SIZES[f"{cfg.size}+"] = {**tiny.SIZES[cfg.size], **cfg.size_overrides}
    size = f"{cfg.size}+" if cfg.size_overrides else cfg.size
    try:
        return tiny.random_model(arch, size, seed=seed, tokenizer=tok, max_length=cfg.max_length)
    finally:
        tiny.SIZES.pop(f"{cfg.size}+", None)


def train_model(model, data: EmojiTrainSet, cfg: PretrainConfig, seed: int, progress: bool = True) -> int:
    """Run the pre-training loop in place; returns the number of optimizer steps.

    Runs with ``cfg.threads`` torch threads (default: ``advlora.threads.auto_threads``, the cores other
    processes leave free) and with eager attention (PyTorch's CPU flash-attention kernel is slower on short
    caption sequences); both are restored afterwards (docs/performance.md: the measurements). ``progress``: a
    bar on a terminal, else a log line every ``advlora.progress.LOG_INTERVAL`` seconds (``BatchProgress``).
    """

    attn = getattr(model.hf_model.config, "_attn_implementation", None)
    _set_attention(model, "eager")
    try:
        with torch_threads(cfg.threads) as n:
            log.info("pre-training tiny-%s on %d thread(s)", model.arch, n)
            return _train_loop(model, data, cfg, seed, progress)
    finally:
        if attn:
            _set_attention(model, attn)


def _set_attention(model, impl: str) -> None:
    if not model.attention_selectable:  # e.g. HF's BLIP: one implementation only (and it warns when asked)
        return
    try:
        model.hf_model.set_attn_implementation(impl)
    except (AttributeError, ValueError):
        pass  # a model without selectable attention keeps its own


def _train_loop(model, data: EmojiTrainSet, cfg: PretrainConfig, seed: int, progress: bool) -> int:
    from transformers import get_cosine_schedule_with_warmup

    g = torch.Generator().manual_seed(seed)
    tokens = Tokens(model.tokenizer, data.captions, cfg.max_length, model.text_padding)
    log_scale = model.temperature()   # the family's learnable log-scale (a fresh one where HF keeps none)
    params = [p for p in model.hf_model.parameters() if p.requires_grad and p is not log_scale]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2] + [log_scale]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)
    bs = min(cfg.batch_size, len(data))
    per_epoch = len(data) // bs
    steps = max(1, cfg.epochs * per_epoch)
    sched = get_cosine_schedule_with_warmup(opt, int(cfg.warmup * steps), steps)
    banks = _init_banks(model, data, tokens) if cfg.bank else None
    model.train()
    bar = BatchProgress(f"pretrain tiny-{model.arch}", steps, mode="auto" if progress else "off", unit="step")
    step = 0
    while step < steps:
        order = torch.randperm(len(data), generator=g)
        for s in range(per_epoch):
            if step >= steps:
                break
            classes = order[s * bs:(s + 1) * bs]
            pixels, cap = data.sample(classes, cfg.name_prob, g)
            loss = _step_loss(model, pixels, tokens, classes, cap, data, banks, log_scale, cfg, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                log_scale.clamp_(0, math.log(100))
            step += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_note(loss=f"{loss.item():.3f}", scale=f"{log_scale.exp().item():.1f}")
    bar.close()
    model.eval()
    model.keep_temperature(log_scale)
    return steps


def encode_captions(model, tokens: Tokens, cap: torch.Tensor, buckets: int = 1) -> torch.Tensor:
    """Embeddings of captions ``cap``, encoded in ``buckets`` groups of similar length, each padded only to
    its own longest caption (captions average 7 tokens, a batch's longest ~20). Exact: padding is masked out
    (and CLIP's text attention is causal, pooled at the first [SEP])."""
    if buckets <= 1:
        return model.encode_text(tokens(cap))
    order = tokens.mask[cap].sum(1).argsort(stable=True)
    parts = [model.encode_text(tokens(cap[idx])) for idx in order.chunk(buckets)]
    return torch.cat(parts)[order.argsort()]


def _step_loss(model, pixels, tokens, classes, cap, data, banks, log_scale, cfg, g) -> torch.Tensor:
    txt = encode_captions(model, tokens, cap, cfg.text_buckets)
    if not model.has_itm:
        img = model.encode_image(pixels)
        return contrastive_loss(model, img, txt, log_scale.exp(), classes, cap, data, banks)
    tok = tokens(cap)
    states = model.image_states(pixels)
    img = model.embed_image_states(states)
    itc = contrastive_loss(model, img, txt, log_scale.exp(), classes, cap, data, banks)
    return itc + cfg.itm_weight * itm_loss(model, states, tok, (img @ txt.t()).detach(), g)


@torch.no_grad()
def _init_banks(model, data: EmojiTrainSet, tokens: Tokens) -> dict[str, torch.Tensor]:
    """Memory of the (initial) embeddings of every caption and of one view of every emoji."""
    model.eval()
    n = len(data.captions)
    text = torch.cat([model.encode_text(tokens(torch.arange(i, min(i + 512, n)))) for i in range(0, n, 512)])
    first = torch.stack([v[0] for v in data.views])
    image = torch.cat([model.encode_image(data.images[first[i:i + 512]].float() / 255)
                       for i in range(0, len(first), 512)])
    return {"text": text, "image": image}


def pretrain(arch: str, out: str | Path, seed: int = 0, *, config: PretrainConfig | None = None,
             train_data=None, eval_data: dict | None = None, progress: bool = True) -> PretrainResult:
    """Pre-train tiny ``arch`` (a family: "clip", "blip", "siglip") on ``emoji-source`` train and save it to
    ``out`` (atomically).

    Args:
        train_data: a ``RetrievalDataset`` to train on instead of the ``PRETRAIN_DATA`` train split (tests).
        eval_data: name -> ``RetrievalDataset`` evaluated at the end (default: the test splits of
            ``PRETRAIN_DATA`` and of ``DOWNSTREAM_DATA``: what the model learnt, and its zero-shot transfer).
    Returns the wall time of the training loop and the clean metrics of each evaluation set.
    """

    cfg = config or default_config(arch)
    get_family(arch)  # an unknown family is one line listing the registered ones
    if cfg.size not in SIZES:
        raise choices_error("model size", cfg.size, SIZES)
    torch.manual_seed(seed)
    train = train_data if train_data is not None else load_dataset(PRETRAIN_DATA, "train")
    data = EmojiTrainSet(train, {**SIZES[cfg.size], **cfg.size_overrides}["image_size"], cfg.limit)
    model = build_model(arch, data.captions, cfg, seed)
    model.name_or_path = f"tiny-{arch}"
    if not cfg.threads:  # decided once, before this process gets busy, and recorded
        cfg = dataclasses.replace(cfg, threads=auto_threads())
    t0 = time.perf_counter()
    steps = train_model(model, data, cfg, seed, progress)
    seconds = time.perf_counter() - t0
    metrics = {}
    evals = eval_data if eval_data is not None else {f"{d} test": load_dataset(d, "test")
                                                     for d in (PRETRAIN_DATA, DOWNSTREAM_DATA)}
    with torch_threads(cfg.threads):  # as training: a busy machine makes spare threads costly
        for name, ds in evals.items():
            if cfg.limit is not None:  # only the emoji trained on
                known = set(data.captions)
                ds = ds.subset([i for i, caps in enumerate(ds.img2txt) if ds.captions[caps[0]] in known])
            metrics[name] = evaluate_clean(model, ds)
            if model.has_itm:
                metrics[f"{name} (ITC only)"] = evaluate_clean(model, ds, rerank_k=0)
    with atomic_dir(out) as tmp:
        save_model(model, tmp)
        write_json(tmp / "pretrain.json", {"arch": arch, "seed": seed, "config": dataclasses.asdict(cfg),
                                           "steps": steps, "train_seconds": round(seconds, 1),
                                           "threads": cfg.threads, "metrics": metrics})
    return PretrainResult(Path(out), seconds, steps, metrics, model, cfg.threads)


def build_tiny(arch: str, out: Path) -> None:
    """Pre-train the shipped tiny ``arch`` with its default configuration into ``out`` (first use of tiny-*)."""
    log.info("tiny-%s is not cached yet: pre-training it on %s", arch, PRETRAIN_DATA)
    pretrain(arch, out)


def ensure_pretrained(name_or_path: str) -> str:
    """The folder of ``tiny-clip`` / ``tiny-blip`` (pre-trained and cached on first use); other names unchanged."""
    return resolve_model_path(name_or_path, build=build_tiny)


def load_model(name_or_path: str, **kwargs) -> VLModel:
    """``advlora.models.load_model``, pre-training a ``tiny-<family>`` default first when it is not cached."""
    return _load_cached(name_or_path, build=build_tiny, **kwargs)
