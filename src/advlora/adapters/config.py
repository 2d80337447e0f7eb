"""``AdapterConfig``: one dataclass for every adapter method, validated field by field and then by its method.

Every AdvLoRA part is a switch here (initialisation, alignment, start mode, alpha), so that ablations change
one field at a time. See docs/method.md for the equations each field controls. The method's declaration
(``advlora.adapters.method``) resolves aliases, gives ``init`` its default and refuses what it cannot run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from advlora.adapters import method as methods
from advlora.adapters.init import INITIALISATIONS
from advlora.config import to_dict
from advlora.errors import AdvloraError, choices_error

TOWERS = ("vision", "text", "both")
#: AdvLoRA's initialisations (``advlora.adapters.init`` declares each); each method declares the ``init`` it accepts
INITS = INITIALISATIONS
MODES = ("residual", "zero_alpha")
ALPHA_MODES = ("layer", "tower", "shared", "fixed")
KMEANS_ON = ("rows", "cols")
ALIGN_INITS = ("lstsq", "onehot")


@dataclass
class AdapterConfig:
    """What to attach to a model and how to initialise it.

    Attributes:
        method: a declared method (``advlora list methods``: frozen | full | lora | advlora | dora | ...) or an
            alias (pissa: lora with init=pissa); the config holds the method's own name.
        rank: LoRA rank r (for advlora also the number of k-means clusters).
        towers: which towers are adapted (vision | text | both).
        targets: None (the backend's defaults per tower), a list of module names / suffixes / regular expressions
            (an entry ``"vision:q_proj"`` applies to one tower only), or a dict tower -> list.
        init: the method's initialisation; None: its default. advlora: a name of
            ``advlora.adapters.init.INITIALISATIONS``: cluster (default: k-means + alignment) | peft (A kaiming,
            B zero) | pissa (top-r SVD of W0). lora: peft's ``init_lora_weights``: peft (default) | pissa | ...
        mode: how advlora keeps the output unchanged at the start: residual (base becomes W0 - alpha0 B0 A0) or
            zero_alpha (alpha starts at 0).
        alpha_mode: one trainable alpha per layer | per tower | one shared | fixed (not trained).
        alpha_init: alpha0; None means 1.0 in residual mode and 0.0 in zero_alpha mode.
        align_lambda: weight of the training regulariser sum ||W0 - BA||^2 / ||W0||^2 (0: initialisation only).
        align_init: with init=cluster, B from least squares (lstsq) or the one-hot k-means assignment (onehot).
        kmeans_iters: Lloyd iterations after k-means++ seeding.
        kmeans_on: cluster the rows of W0 (A = centroids) or its columns (B = centroids).
        seed: seed of k-means++ and of peft's random A.
        lora_alpha: peft's lora_alpha for lora / pissa (scaling lora_alpha / r); None: = rank (scaling 1).
            advlora ignores it: its trainable alpha is the scale.
        dropout: dropout on the LoRA branch (peft's lora_dropout).
        use_rslora: rank-stabilised scaling lora_alpha / sqrt(r) (peft's use_rslora) for the methods that read it.
        n_tokens: learned vision prompt tokens per prompted layer (vpt, visual-prompt); None: the method's default.
        depth: the layers whose input gets new prompt tokens (vpt: 1 shallow, > 1 deep; None: 1); maple: the
            prompted layers J of each tower (None: MaPLe's 9, capped at the towers' layers).
        prompt_size: visual-prompt's frame width in pixels at the model's resolution; None: TeCoA's 30 px at
            224 px, scaled to the model's (4 px at 32 px).
        n_ctx: learned context tokens of a prompt method (coop; maple: also its vision tokens per layer); None:
            the method's default (coop: the phrase's tokens with init=phrase, 4 with init=random; maple: 2). With a
            phrase, its first n_ctx tokens are learned and the rest stay fixed text.
        ctx_phrase: the phrase a prompt's context starts from with init=phrase (CoOp's CTX_INIT).
        class_position: where the class name goes relative to a text prompt's context: end | middle | front.
        class_specific: one context per class (CoOp's CSC) instead of one shared by every class.
        trainable_alpha: AdvLoRA's trainable scalar alpha on the branch, for the methods that offer it as an option
            (dora; ``alpha_mode`` says which layers share one, ``alpha_init`` its start). advlora ignores it: its
            alpha is set by ``alpha_mode``.
        coupling: maple's link between its text and vision prompts: text-to-vision (MaPLe: the vision prompts are
            linear maps of the text prompts), vision-to-text (FAP: the deep text prompts are maps of learned vision
            prompts) or none (AdvVLP's independent prompts; the alias ``vlp``); None: the method's default.
    """

    method: str = "advlora"
    rank: int = 8
    towers: str = "both"
    targets: Any = None
    init: str | None = None
    mode: str = "residual"
    alpha_mode: str = "layer"
    alpha_init: float | None = None
    align_lambda: float = 0.0
    align_init: str = "lstsq"
    kmeans_iters: int = 20
    kmeans_on: str = "rows"
    seed: int = 0
    lora_alpha: float | None = None
    dropout: float = 0.0
    use_rslora: bool = False
    n_tokens: int | None = None
    depth: int | None = None
    prompt_size: int | None = None
    n_ctx: int | None = None
    ctx_phrase: str = "a photo of a"
    class_position: str = "end"
    class_specific: bool = False
    trainable_alpha: bool = False
    coupling: str | None = None

    def __post_init__(self) -> None:
        method, alias = methods.resolve(self.method)
        if self.init in method.legacy_inits:
            self.init = None  # written by a version where this method ignored init
        for name, value in alias.items():
            if getattr(self, name) not in (None, value):
                raise AdvloraError(f"adapter method {self.method} sets {name}={value}, not {getattr(self, name)}")
            setattr(self, name, value)
        self.method = method.name
        for name, value in method.defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if method.inits:
            self.init = method.default_init if self.init is None else self.init
            if self.init not in method.inits:
                raise choices_error("adapter init", self.init, method.inits)
        else:
            self.init = None  # the method has no initialisation to choose
        for name, valid in (("towers", TOWERS), ("mode", MODES),
                            ("alpha_mode", ALPHA_MODES), ("kmeans_on", KMEANS_ON), ("align_init", ALIGN_INITS)):
            if getattr(self, name) not in valid:
                raise choices_error(f"adapter {name}", getattr(self, name), valid)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise AdvloraError(f"adapter rank must be a positive integer, got {self.rank!r}")
        if not isinstance(self.kmeans_iters, int) or self.kmeans_iters < 0:
            raise AdvloraError(f"adapter kmeans_iters must be an integer >= 0, got {self.kmeans_iters!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise AdvloraError(f"adapter dropout must be in [0, 1), got {self.dropout!r}")
        if float(self.align_lambda) < 0:
            raise AdvloraError(f"adapter align_lambda must be >= 0, got {self.align_lambda!r}")
        if self.lora_alpha is not None and float(self.lora_alpha) <= 0:
            raise AdvloraError(f"adapter lora_alpha must be > 0, got {self.lora_alpha!r}")
        if not isinstance(self.use_rslora, bool):
            raise AdvloraError(f"adapter use_rslora must be true or false, got {self.use_rslora!r}")
        for name, least in (("n_tokens", 0), ("depth", 1), ("prompt_size", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise AdvloraError(f"adapter {name} must be an integer >= {least}, got {value!r}")
        if not isinstance(self.trainable_alpha, bool):
            raise AdvloraError(f"adapter trainable_alpha must be true or false, got {self.trainable_alpha!r}")
        method.validate(self)
        self.targets = _normalize_targets(self.targets)

    @property
    def alpha0(self) -> float:
        """The initial alpha: ``alpha_init``, or 1 (residual) / 0 (zero_alpha)."""
        if self.alpha_init is not None:
            return float(self.alpha_init)
        return 1.0 if self.mode == "residual" else 0.0

    @property
    def scaling(self) -> float:
        """peft's lora_alpha / r (lora_alpha / sqrt(r) with use_rslora) for the peft baselines."""
        alpha = float(self.lora_alpha if self.lora_alpha is not None else self.rank)
        return alpha / (self.rank ** 0.5 if self.use_rslora else self.rank)

    def to_dict(self) -> dict:
        return to_dict(self)


def _normalize_targets(targets: Any) -> Any:
    """None, a list of strings, or a dict tower -> list of strings; a comma string becomes a list."""
    if targets is None:
        return None
    if isinstance(targets, str):
        targets = [t for t in targets.replace(",", " ").split() if t]
    if isinstance(targets, dict):
        out = {}
        for tower, names in targets.items():
            if tower not in ("vision", "text"):
                raise choices_error("adapter targets tower", tower, ("vision", "text"))
            out[tower] = _normalize_targets(names)
        return out
    if isinstance(targets, (list, tuple)) and all(isinstance(t, str) and t for t in targets):
        if not targets:
            raise AdvloraError("adapter targets is an empty list")
        return list(targets)
    raise AdvloraError(f"adapter targets must be a list of names, got {targets!r}")


def make_config(method_or_config: str | AdapterConfig | dict, rank: int | None = None,
                **options: Any) -> AdapterConfig:
    """An ``AdapterConfig`` from a method name plus options, a dict, or a config (options override)."""
    import dataclasses

    if isinstance(method_or_config, AdapterConfig):
        base = method_or_config.to_dict()
    elif isinstance(method_or_config, dict):
        base = dict(method_or_config)
    elif isinstance(method_or_config, str):
        base = {"method": method_or_config}
    else:
        raise AdvloraError(f"adapter must be a method name or an AdapterConfig, got {type(method_or_config).__name__}")
    if rank is not None:
        base["rank"] = rank
    base.update(options)
    valid = {f.name for f in dataclasses.fields(AdapterConfig)}
    unknown = sorted(set(base) - valid)
    if unknown:
        raise choices_error("adapter option", unknown[0], valid)
    return AdapterConfig(**base)
