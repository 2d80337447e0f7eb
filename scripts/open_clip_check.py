"""advlora's open_clip conversion against open_clip itself, where open_clip imports (it needs torchvision: a GPU
machine's CUDA torch, or any machine with a matching torchvision).

For each named open_clip architecture: a randomly initialised open_clip model is written in the hub layout
(``open_clip_config.json`` + ``open_clip_model.safetensors``, open_clip's own BPE vocabulary as the tokenizer),
loaded through ``advlora.load_model`` and compared with open_clip's ``encode_image`` / ``encode_text`` (float32,
TF32 off); the token ids of advlora's tokenizer are compared with open_clip's tokenizer; the vision-state-dict
form (``open_clip:<folder>+vision=<model.visual.state_dict()>``) is compared with open_clip after
``model.visual.load_state_dict``; architectures advlora does not convert must be refused in one line.

    python scripts/open_clip_check.py [--device cuda] [--models ViT-B-32,ViT-B-16-quickgelu,ViT-L-14]

Prints one line per check and exits 1 if any fails.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

CAPTIONS = ["a photo of a dog", "A RED car, parked!", "two people walking on the beach at sunset", "x"]
REFUSED = ("convnext_base", "coca_ViT-B-32", "RN50", "ViT-B-16-SigLIP", "xlm-roberta-base-ViT-B-32")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def write_folder(open_clip, name: str, model, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    cfg = open_clip.get_model_config(name)
    pre = {"size": model.visual.image_size[0], "mean": list(open_clip.OPENAI_DATASET_MEAN),
           "std": list(open_clip.OPENAI_DATASET_STD), "interpolation": "bicubic", "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": pre}))
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))


def check_model(open_clip, advlora, name: str, device: str, work: Path, tol: float) -> list[tuple[str, bool, str]]:
    torch.manual_seed(0)
    reference = open_clip.create_model(name, pretrained=None).to(device).eval()
    folder = work / name
    write_folder(open_clip, name, reference, folder)
    model = advlora.load_model(str(folder), device=device)
    size = model.image_size
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=device).view(1, 3, 1, 1)
    tokens = open_clip.get_tokenizer(name)(CAPTIONS).to(device)
    out = []
    with torch.no_grad():
        img = rel_err(model.encode_image(x, normalize=False), reference.encode_image((x - mean) / std))
        txt = rel_err(model.encode_text(CAPTIONS, normalize=False), reference.encode_text(tokens))
        ids = model.tokenize(CAPTIONS)["input_ids"]
        padded = torch.zeros_like(tokens)
        padded[:, :ids.shape[1]] = ids * model.tokenize(CAPTIONS)["attention_mask"]
        scale = abs(float(model.logit_scale) - float(reference.logit_scale.exp()))
    out.append((f"{name}: image features (max rel. error {img:.2e})", img <= tol, ""))
    out.append((f"{name}: text features (max rel. error {txt:.2e})", txt <= tol, ""))
    out.append((f"{name}: token ids equal open_clip's tokenizer", bool(torch.equal(padded, tokens)), ""))
    out.append((f"{name}: logit scale (diff {scale:.1e})", scale <= 1e-4, ""))
    # the vision-state-dict form: another model's visual weights on this base
    torch.manual_seed(1)
    other = open_clip.create_model(name, pretrained=None).eval()
    torch.save(other.visual.state_dict(), work / f"{name}-visual.pt")
    reference.visual.load_state_dict(other.visual.state_dict())
    model = advlora.load_model(f"open_clip:{folder}+vision={work / f'{name}-visual.pt'}", device=device)
    with torch.no_grad():
        img = rel_err(model.encode_image(x, normalize=False), reference.encode_image((x - mean) / std))
        txt = rel_err(model.encode_text(CAPTIONS, normalize=False), reference.encode_text(tokens))
    out.append((f"{name}: +vision= image features (max rel. error {img:.2e})", img <= tol, ""))
    out.append((f"{name}: +vision= text features from the base (max rel. error {txt:.2e})", txt <= tol, ""))
    return out


def check_refused(open_clip, advlora, name: str, work: Path) -> tuple[str, bool, str]:
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        return (f"{name}: refused (config not in this open_clip)", True, "skipped")
    folder = work / f"refused-{name}"
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    try:
        advlora.load_model(str(folder))
    except advlora.AdvloraError as e:
        one_line = "\n" not in str(e)
        return (f"{name}: refused in one line: {e}", one_line, "")
    return (f"{name}: refused", False, "it loaded")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default="ViT-B-32,ViT-B-16-quickgelu,ViT-L-14")
    p.add_argument("--tol", type=float, default=1e-5, help="max relative error of the features")
    args = p.parse_args(argv)
    try:
        import open_clip
    except Exception as e:  # noqa: BLE001 - report why and stop
        print(f"SKIP open_clip does not import here ({type(e).__name__}: {e})")
        return 0
    import advlora

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["ADVLORA_HOME"] = str(work / "home")
        bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
        os.environ.setdefault("ADVLORA_CLIP_BPE", str(bpe))  # open_clip's own vocabulary, read as a file
        for name in [m for m in args.models.split(",") if m]:
            results += check_model(open_clip, advlora, name, args.device, work, args.tol)
        for name in REFUSED:
            results.append(check_refused(open_clip, advlora, name, work))
    for line, ok, note in results:
        print(f"{'PASS' if ok else 'FAIL'} {line}" + (f" ({note})" if note else ""))
    failed = sum(not ok for _, ok, _ in results)
    print(f"open_clip {open_clip.__version__}: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
