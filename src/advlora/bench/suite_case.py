"""``advlora bench``'s suite measurements: the ``standard`` suite against its members run alone, and against
AutoAttack (torchattacks, when importable) on the reduction where both attack one function.

- Suite vs members: on a set of ``n`` random images (two captions each) and a random model of the bench's size,
  the suite's members at a bench budget (``BENCH_MEMBERS``: the standard members' attacks and objectives, at a
  tenth of their steps and queries and 3 targets) run as one suite (early exit, and exhaustive), and each
  alone on every image; every wall is the evaluation's minus that of an evaluation without attacks (clean
  encoding and metrics), so the ratio compares attack work. Images per second: ``n`` / the early-exit wall.
- AutoAttack reduction: with one caption per image, image-to-text R@1 over the caption gallery is the accuracy
  of the classifier whose logits are the image's similarities to the captions (``CaptionClassifier``); both
  tools attack that function at their full standard budgets, and the bench prints the two robust accuracies
  and the wall ratio, the suite at exit rank 1 (done once off rank 1, AutoAttack's rule) and at the default
  10. torchattacks is an optional extra (never a dependency).
- Zero-shot classification reduction: the same comparison on a few-class set (``few_class_set``: the classes of
  ``emoji-cls`` with the most test images, a fixed number of images each), the classifier being the scaled
  cosine to the prompt-ensembled class embeddings the evaluation itself attacks. With fewer classes than the
  default exit rank, the suite's exit rank follows the task (the largest k the set can report).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from advlora.attacks import ThreatModel, registry
from advlora.attacks.registry import AttackSpec, SuiteMember
from advlora.data import load_dataset
from advlora.data.classification import ClassificationDataset
from advlora.data.dataset import RetrievalDataset
from advlora.evaluation.robust import evaluate_robust
from advlora.models.video import for_dataset
from advlora.training.pretrain import load_model

#: the standard suite's members at a bench budget
BENCH_MEMBERS = (
    SuiteMember("apgd-ce", "apgd", objective="contrastive", changes={"steps": 10}),
    SuiteMember("apgd-t", "apgd-t", changes={"steps": 10}, options={"targets": 3}),
    SuiteMember("square", "square", objective="margin", options={"queries": 500}),
)


def _suite(name: str, members) -> AttackSpec:
    return AttackSpec(name, "suite", None, uses=("norm", "eps", "seed"), label=name, members=tuple(members),
                      checks=("bounds",))


def random_set(folder: Path, n: int, size: int, captions_per_image: int = 2, seed: int = 0) -> RetrievalDataset:
    """``n`` random RGB images of ``size`` pixels as PNG files in ``folder``, with captions from a small vocabulary."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    words = ["red", "apple", "dog", "face", "flag", "japan", "rocket", "house", "green", "heart", "blue", "car"]
    files, caps, owner = [], [], []
    for i in range(n):
        arr = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i}.png")
        files.append(f"{i}.png")
        for c in range(captions_per_image):
            caps.append(" ".join(words[(i * 5 + c * 3 + j) % len(words)] for j in range(3 + c)))
            owner.append(i)
    return RetrievalDataset(folder, files, caps, torch.tensor(owner), name="bench-random")


def measure_suite(model, n: int = 8, eps: str = "4/255", batch_size: int = 8) -> dict[str, float]:
    """The suite's wall (early exit and exhaustive) against the sum of its members alone; images per second."""
    th = ThreatModel(eps=eps)
    kw = dict(batch_size=batch_size, sanity=False, rerank_k=0)
    with tempfile.TemporaryDirectory(prefix="advlora-bench-suite-") as tmp:
        data = random_set(Path(tmp), n, model.image_size)

        def wall(attacks, **extra) -> float:
            t = time.perf_counter()
            evaluate_robust(model, data, attacks, th, **kw, **extra)
            return time.perf_counter() - t

        base = wall([])
        alone = 0.0
        for m in BENCH_MEMBERS:
            with registry.registered(_suite(f"bench-{m.label}", [m])) as spec:
                alone += wall([spec.name], exhaustive=True) - base
        with registry.registered(_suite("bench-standard", BENCH_MEMBERS)) as spec:
            early = wall([spec.name]) - base
            exhaustive = wall([spec.name], exhaustive=True) - base
    return {"suite_images": n, "suite_early_s": early, "suite_exhaustive_s": exhaustive, "suite_members_s": alone,
            "p7_suite_vs_members": early / alone, "p7_exhaustive_vs_members": exhaustive / alone,
            "suite_images_per_s": n / max(early, 1e-9)}


class CaptionClassifier(torch.nn.Module):
    """Logits of an image = its scaled similarities to the caption gallery: with one caption per image, the
    accuracy against labels ``arange(N)`` is image-to-text R@1."""

    def __init__(self, model, captions: list[str]) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.register_buffer("tf", model.encode_text(captions).detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logit_scale.detach() * self.model.encode_image(x) @ self.tf.t()


def have_torchattacks() -> bool:
    try:
        import torchattacks  # noqa: F401
    except Exception:   # noqa: BLE001 - an optional extra: absent, or broken by its own imports
        return False
    return True


#: the suite's exit ranks measured on the reduction: 1 (AutoAttack's rule: a point is done once misclassified,
#: as only R@1 is compared) and 10 (the default: R@5 and R@10 exact too)
REDUCTION_EXIT_K = (1, 10)


def reduction_rows(n: int = 100, norm: str = "linf", eps: str | None = None) -> list[dict]:
    """The two rows of the reduction on the pre-trained tiny CLIP (``tiny-clip``): emoji-downstream at 4/255
    and emoji-source at 2/255 (``eps``: both at that radius, as an l2 comparison needs), ``n`` test images each,
    under ``norm``."""
    model = load_model("tiny-clip")
    rows = []
    for name, default in (("emoji-downstream", "4/255"), ("emoji-source", "2/255")):
        data = load_dataset(name, "test", limit=n, seed=0)
        e = eps or default
        rows.append({"data": name, "eps": e, "norm": norm, **measure_autoattack(model, data, e, norm=norm)})
    return rows


def few_class_set(n_classes: int = 7, per_class: int = 20, name: str = "emoji-cls",
                  split: str = "test") -> ClassificationDataset:
    """The ``n_classes`` classes of ``name`` with the most images in ``split`` (ties: class order), at most
    ``per_class`` images each (file order), labels renumbered in that class order; the set's templates kept."""
    full = load_dataset(name, split)
    counts = torch.bincount(full.labels, minlength=len(full.captions))
    keep = sorted(sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))[:n_classes])
    images, labels = [], []
    for new, c in enumerate(keep):
        rows = (full.labels == c).nonzero().flatten().tolist()[:per_class]
        images += [full.images[i] for i in rows]
        labels += [new] * len(rows)
    return ClassificationDataset(full.root, images, [full.captions[c] for c in keep], torch.zeros(0, dtype=torch.long),
                                 f"{full.name}-{n_classes}cls", labels=labels, templates=full.templates)


def classification_row(n_classes: int = 7, per_class: int = 20, eps: str = "1/255", norm: str = "linf") -> dict:
    """The zero-shot classification row on the pre-trained tiny CLIP: ``few_class_set`` at ``eps`` under
    ``norm``."""
    model = load_model("tiny-clip")
    data = few_class_set(n_classes, per_class)
    return {"data": data.name, "eps": eps, "norm": norm,
            **measure_autoattack(model, data, eps, exit_ks=(1, None), norm=norm)}


#: torchattacks' name of each norm
TORCHATTACKS_NORMS = {"linf": "Linf", "l2": "L2"}


def measure_autoattack(model, data: RetrievalDataset, eps: str = "4/255", batch_size: int = 32,
                       exit_ks: tuple[int | None, ...] = REDUCTION_EXIT_K, norm: str = "linf") -> dict:
    """advlora's ``standard`` suite vs torchattacks' AutoAttack (standard version) on ``data`` with one caption
    per image (its first; a classification set as it is, against its prompt-ensembled classes): robust i2t R@1
    (top-1) vs robust accuracy (percent) and the wall ratio, the suite once per exit rank of ``exit_ks``
    (``evaluate_robust(exit_k=)``; None: the task's default), AutoAttack once, between them; both under
    ``norm`` (linf or l2: torchattacks' ``norm="L2"``) at radius ``eps``."""
    import torchattacks

    if isinstance(data, ClassificationDataset):
        one, y = data, data.labels
    else:
        first = [caps[0] for caps in data.img2txt]
        one = RetrievalDataset(data.root, data.images, [data.captions[j] for j in first],
                               torch.arange(len(data)), name=data.name)
        y = torch.arange(len(one))
    th = ThreatModel(norm=norm, eps=eps)

    def ours(k: int | None) -> dict:
        t = time.perf_counter()
        res = evaluate_robust(model, one, ["standard"], th, batch_size=batch_size, sanity=False, rerank_k=0,
                              exit_k=k)
        return {"exit_k": res.get("suite_exit_k", k), "ours_r1": res["attacks"]["standard"]["metrics"]["i2t_r1"],
                "ours_s": time.perf_counter() - t, "clean_r1": res["clean"]["i2t_r1"]}

    runs = [ours(exit_ks[0])]
    clf = CaptionClassifier(for_dataset(model, one), one.captions).eval()
    x = one.load_images_uint8(model.image_size).float() / 255
    aa = torchattacks.AutoAttack(clf, norm=TORCHATTACKS_NORMS[th.norm], eps=float(th.eps), version="standard",
                                 n_classes=len(one.captions), seed=0)
    t = time.perf_counter()
    adv = torch.cat([aa(x[s:s + batch_size], y[s:s + batch_size]) for s in range(0, len(x), batch_size)])
    aa_s = time.perf_counter() - t
    runs += [ours(k) for k in exit_ks[1:]]
    with torch.no_grad():
        acc = 100.0 * float((clf(adv).argmax(1) == y).float().mean())
    for r in runs:
        r["p8_vs_autoattack"] = r["ours_s"] / aa_s
    head = runs[0]
    return {"aa_images": len(one), "aa_acc": acc, "aa_s": aa_s, "clean_r1": head["clean_r1"], "exit_k": head["exit_k"],
            "ours_r1": head["ours_r1"], "ours_s": head["ours_s"], "p8_vs_autoattack": head["p8_vs_autoattack"],
            "by_exit_k": runs}


__all__ = ["BENCH_MEMBERS", "REDUCTION_EXIT_K", "TORCHATTACKS_NORMS", "CaptionClassifier", "classification_row",
           "few_class_set", "have_torchattacks", "measure_autoattack", "measure_suite", "random_set"]
