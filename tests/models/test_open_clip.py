"""open_clip checkpoints read without open_clip: the converted CLIPModel against a reference forward of the open_clip
ViT architecture written here from the state dict, both published layouts, refusals, tokenizer sources, the cache,
and the converted model through evaluation, an attack, an adapter and its export."""
from __future__ import annotations

import gzip
import json
import math

import huggingface_hub
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPModel
from transformers.convert_slow_tokenizer import bytes_to_unicode

from advlora.adapters import attach_adapter, load_adapter, save_adapter
from advlora.attacks import ThreatModel
from advlora.bench import SIZES
from advlora.bench.open_clip_size import (
    LAION_VIT_B32,
    OPEN_CLIP_SIZES,
    byte_tokenizer,
    open_clip_model,
    random_open_clip_state,
)
from advlora.cli import main
from advlora.data import load_dataset
from advlora.errors import AdvloraError
from advlora.evaluation import evaluate_clean
from advlora.evaluation.robust import evaluate_robust
from advlora.models import load_model, save_model
from advlora.models import open_clip as oc

# ---- a tiny open_clip checkpoint, written as open_clip writes one ---------------------------------------------
MERGES = [("r", "e"), ("re", "d</w>"), ("d", "o"), ("do", "g</w>"), ("c", "a"), ("ca", "t</w>")]
CAPTIONS = ["red dog", "a cat", "red cat on a dog", "dog"]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def vocab_and_merges():
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


VOCAB = vocab_and_merges()


def write_tokenizer(folder):
    (folder / "vocab.json").write_text(json.dumps(VOCAB))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))


def model_cfg(quick_gelu=False, **over):
    cfg = {"embed_dim": 24,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": len(VOCAB), "width": 32, "heads": 2, "layers": 2},
           **({"quick_gelu": True} if quick_gelu else {})}
    for k, v in over.items():
        if k in ("vision_cfg", "text_cfg"):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def _blocks(r, prefix, width, layers, mlp):
    sd = {}
    for i in range(layers):
        p = f"{prefix}transformer.resblocks.{i}."
        sd.update({p + "ln_1.weight": 1 + r(width), p + "ln_1.bias": r(width),
                   p + "attn.in_proj_weight": r(3 * width, width), p + "attn.in_proj_bias": r(3 * width),
                   p + "attn.out_proj.weight": r(width, width), p + "attn.out_proj.bias": r(width),
                   p + "ln_2.weight": 1 + r(width), p + "ln_2.bias": r(width),
                   p + "mlp.c_fc.weight": r(mlp, width), p + "mlp.c_fc.bias": r(mlp),
                   p + "mlp.c_proj.weight": r(width, mlp), p + "mlp.c_proj.bias": r(width)})
    return sd


def visual_state(cfg, seed, prefix="visual."):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    v, e = cfg["vision_cfg"], cfg["embed_dim"]
    w, p = v["width"], v["patch_size"]
    n = (v["image_size"] // p) ** 2 + 1
    sd = {"conv1.weight": r(w, 3, p, p), "class_embedding": r(w), "positional_embedding": r(n, w),
          "ln_pre.weight": 1 + r(w), "ln_pre.bias": r(w), "ln_post.weight": 1 + r(w), "ln_post.bias": r(w),
          "proj": r(w, e), **_blocks(r, "", w, v["layers"], 4 * w)}
    return {prefix + k: t for k, t in sd.items()}


def clip_state(cfg, seed, text_prefix=""):
    g = torch.Generator().manual_seed(seed + 1000)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    t, e = cfg["text_cfg"], cfg["embed_dim"]
    w = t["width"]
    sd = {"token_embedding.weight": r(t["vocab_size"], w), "positional_embedding": r(t["context_length"], w),
          "ln_final.weight": 1 + r(w), "ln_final.bias": r(w), "text_projection": r(w, e),
          **_blocks(r, "", w, t["layers"], 4 * w)}
    return {**visual_state(cfg, seed), **{text_prefix + k: v for k, v in sd.items()},
            "logit_scale": torch.tensor(math.log(1 / 0.07))}


def write_open_clip(folder, cfg, state, layout="safetensors", tokenizer=True, preprocess=None):
    folder.mkdir(parents=True, exist_ok=True)
    pre = preprocess if preprocess is not None else {"mean": MEAN, "std": STD, "resize_mode": "squash"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": pre}))
    if layout == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
    else:
        torch.save(state, folder / "open_clip_pytorch_model.bin")
    if tokenizer:
        write_tokenizer(folder)
    return folder


# ---- the reference: open_clip's ViT CLIP forward, written from the state dict --------------------------------
def _ln(x, sd, p):
    return F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], 1e-5)


def _block(x, sd, p, heads, quick, mask=None):
    b, n, d = x.shape
    h = _ln(x, sd, p + "ln_1")
    q, k, v = (h @ sd[p + "attn.in_proj_weight"].t() + sd[p + "attn.in_proj_bias"]).split(d, dim=-1)
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    att = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    if mask is not None:
        att = att + mask
    o = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
    x = x + o @ sd[p + "attn.out_proj.weight"].t() + sd[p + "attn.out_proj.bias"]
    h = _ln(x, sd, p + "ln_2") @ sd[p + "mlp.c_fc.weight"].t() + sd[p + "mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h) if quick else F.gelu(h)
    return x + h @ sd[p + "mlp.c_proj.weight"].t() + sd[p + "mlp.c_proj.bias"]


def ref_image(sd, cfg, pixels, quick):
    """Normalised pixels -> image features (open_clip VisionTransformer: [CLS] pooling after ln_post, then proj)."""
    v = cfg["vision_cfg"]
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=v["patch_size"]).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = _ln(torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"], sd, "visual.ln_pre")
    for i in range(v["layers"]):
        x = _block(x, sd, f"visual.transformer.resblocks.{i}.", v["width"] // v["head_width"], quick)
    return _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


def ref_text(sd, cfg, ids, quick, prefix=""):
    """Token ids padded with 0 to the context length -> text features (causal mask, pooled at the highest id)."""
    t = cfg["text_cfg"]
    n = ids.shape[1]
    x = sd[prefix + "token_embedding.weight"][ids] + sd[prefix + "positional_embedding"][:n]
    mask = torch.full((n, n), float("-inf")).triu(1)
    for i in range(t["layers"]):
        x = _block(x, sd, f"{prefix}transformer.resblocks.{i}.", t["heads"], quick, mask)
    x = _ln(x, sd, prefix + "ln_final")
    return x[torch.arange(len(ids)), ids.argmax(dim=-1)] @ sd[prefix + "text_projection"]


def open_clip_ids(model, captions, context):
    """open_clip's layout of the token ids: [sot] tokens [eot], zero-padded to the context length."""
    rows = [model.tokenizer(c)["input_ids"] for c in captions]
    return torch.tensor([r + [0] * (context - len(r)) for r in rows])


def images(n=3, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_matches(model, sd, cfg, quick, text_sd=None, text_prefix=""):
    x = images()
    pixels = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        got_i, got_t = model.encode_image(x, normalize=False), model.encode_text(CAPTIONS, normalize=False)
        want_i = ref_image(sd, cfg, pixels, quick)
        want_t = ref_text(text_sd or sd, cfg, open_clip_ids(model, CAPTIONS, cfg["text_cfg"]["context_length"]),
                          quick, text_prefix)
    assert want_i.abs().max() > 0.1 and want_t.abs().max() > 0.1  # not a degenerate comparison
    assert (got_i - want_i).abs().max() <= 1e-5
    assert (got_t - want_t).abs().max() <= 1e-5


# ---- equality with the reference --------------------------------------------------------------------------
@pytest.mark.parametrize("layout,quick,text_prefix", [("bin", False, ""), ("bin", True, ""),
                                                      ("safetensors", False, ""), ("safetensors", True, "text.")])
def test_an_open_clip_folder_converts_to_the_reference_features(tmp_path, layout, quick, text_prefix):
    cfg = model_cfg(quick_gelu=quick, **({"custom_text": True} if text_prefix else {}))
    state = clip_state(cfg, seed=0, text_prefix=text_prefix)
    state["attn_mask"] = torch.zeros(16, 16)  # older checkpoints saved the causal mask buffer
    folder = write_open_clip(tmp_path / "oc", cfg, state, layout)
    assert oc.is_open_clip_checkpoint(str(folder))
    model = load_model(str(folder))
    assert model.alias == str(folder) and model.name_or_path != str(folder)
    assert model.hf_model.config.vision_config.hidden_act == ("quick_gelu" if quick else "gelu")
    assert (model.image_size, model.max_length) == (32, 16)
    assert model.mean.flatten().tolist() == pytest.approx(MEAN) and model.std.flatten().tolist() == pytest.approx(STD)
    assert_matches(model, state, cfg, quick, text_prefix=text_prefix)
    assert model.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_the_tokenizer_numbers_tokens_as_the_bpe_vocabulary(tmp_path):
    cfg = model_cfg()
    model = load_model(str(write_open_clip(tmp_path / "oc", cfg, clip_state(cfg, 0))))
    ids = model.tokenizer("Red  dog")["input_ids"]
    assert ids == [VOCAB["<|startoftext|>"], VOCAB["red</w>"], VOCAB["dog</w>"], VOCAB["<|endoftext|>"]]
    assert model.tokenizer.eos_token_id == len(VOCAB) - 1


def test_a_wrong_activation_is_detected_by_the_reference(tmp_path):
    """The comparison can fail: the same weights read with the other activation differ from the reference."""
    cfg = model_cfg(quick_gelu=False)
    state = clip_state(cfg, 0)
    folder = write_open_clip(tmp_path / "oc", cfg, state)
    model = load_model(f"open_clip:{folder}+quick_gelu=true")
    assert model.hf_model.config.vision_config.hidden_act == "quick_gelu"
    with pytest.raises(AssertionError):
        assert_matches(model, state, cfg, quick=False)
    assert_matches(model, state, cfg, quick=True)


@pytest.mark.parametrize("base_kind", ["open_clip", "transformers"])
def test_a_vision_state_dict_on_a_base_takes_its_text_tower_from_the_base(tmp_path, base_kind):
    cfg = model_cfg(quick_gelu=True)
    base_state = clip_state(cfg, seed=0)
    base = write_open_clip(tmp_path / "base", cfg, base_state)
    if base_kind == "transformers":  # the converted base, as a transformers CLIP folder (how openai/* publish)
        base = tmp_path / "hf-base"
        save_model(load_model(str(tmp_path / "base")), base)
    robust = visual_state(cfg, seed=7, prefix="")  # what model.visual.state_dict() saves
    torch.save(robust, tmp_path / "fare.pt")
    model = load_model(f"open_clip:{base}+vision={tmp_path / 'fare.pt'}")
    both = {**base_state, **{f"visual.{k}": v for k, v in robust.items()}}
    assert_matches(model, both, cfg, quick=True)
    # the base itself still reads its own vision tower (another cache entry)
    assert_matches(load_model(str(tmp_path / "base")), base_state, cfg, quick=True)


def test_vision_weights_of_another_architecture_are_refused_in_one_line(tmp_path):
    cfg = model_cfg()
    base = write_open_clip(tmp_path / "base", cfg, clip_state(cfg, 0))
    wide = model_cfg(vision_cfg={"width": 48})
    torch.save(visual_state(wide, 1, prefix=""), tmp_path / "wide.pt")
    with pytest.raises(AdvloraError) as e:
        load_model(f"open_clip:{base}+vision={tmp_path / 'wide.pt'}")
    assert "does not fit" in str(e.value) and "\n" not in str(e.value)


# ---- refusals ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("over,named", [
    ({"vision_cfg": {"timm_model_name": "convnext_base"}}, "timm"),
    ({"vision_cfg": {"layers": [3, 4, 6, 3]}}, "ResNet"),
    ({"vision_cfg": {"attentional_pool": True}}, "attentional pooling"),
    ({"vision_cfg": {"no_ln_pre": True}}, "no_ln_pre"),
    ({"vision_cfg": {"ls_init_value": 0.1}}, "layer scale"),
    ({"vision_cfg": {"pool_type": "avg"}}, "pool_type"),
    ({"vision_cfg": {"qk_norm": True}}, "qk_norm"),
    ({"text_cfg": {"hf_model_name": "xlm-roberta-base"}}, "Hugging Face text tower"),
    ({"text_cfg": {"pool_type": "last"}}, "pool_type"),
    ({"text_cfg": {"proj_bias": True}}, "proj_bias"),
    ({"init_logit_bias": -10}, "logit bias"),
    ({"multimodal_cfg": {"width": 32}}, "CoCa"),
    ({"vision_cfg": {"something_new": 1}}, "something_new"),
])
def test_what_is_not_a_standard_vit_clip_is_refused_in_one_line(tmp_path, over, named):
    cfg = model_cfg(**over)
    folder = write_open_clip(tmp_path / "oc", cfg, clip_state(model_cfg(), 0))
    with pytest.raises(AdvloraError) as e:
        load_model(str(folder))
    msg = str(e.value)
    assert "not supported" in msg and named in msg and "\n" not in msg


def test_unknown_pretrained_tag_and_a_missing_hub_repo_are_one_line(tmp_path):
    torch.save(visual_state(model_cfg(), 0, prefix=""), tmp_path / "v.pt")
    with pytest.raises(AdvloraError, match="unknown open_clip pretrained base 'ViT-L-14@nope'"):
        load_model(f"open_clip:ViT-L-14@nope+vision={tmp_path / 'v.pt'}")
    with pytest.raises(AdvloraError) as e:  # a known tag whose base is not cached: one line naming the repo
        load_model(f"open_clip:ViT-L-14@openai+vision={tmp_path / 'v.pt'}")
    assert "openai/clip-vit-large-patch14" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(AdvloraError) as e:  # HF_HUB_OFFLINE (conftest): not cached -> one line, no traceback
        load_model("hf-hub:nobody/not-cached-anywhere")
    assert "Hugging Face cache" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(AdvloraError, match="no such file"):
        load_model(f"open_clip:{tmp_path}+vision={tmp_path / 'missing.pt'}")


def test_an_hf_hub_id_reads_the_files_the_hub_serves(tmp_path, monkeypatch):
    """The hub path asks for the config, the safetensors (then the .bin) and the optional tokenizer files."""
    cfg = model_cfg()
    state = clip_state(cfg, 3)
    repo = write_open_clip(tmp_path / "repo", cfg, state, layout="bin")
    asked = []

    def fake_download(repo_id, filename, revision=None):
        asked.append(filename)
        if not (repo / filename).is_file():
            raise huggingface_hub.errors.EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(repo / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = load_model("hf-hub:someone/tiny-clip")
    assert asked[:3] == ["open_clip_config.json", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    assert model.alias == "hf-hub:someone/tiny-clip"
    assert_matches(model, state, cfg, quick=False)


# ---- tokenizer sources and the cache ------------------------------------------------------------------------
def test_without_tokenizer_files_the_bpe_vocabulary_is_used_or_the_gap_named(tmp_path, monkeypatch):
    cfg = model_cfg()
    state = clip_state(cfg, 0)
    folder = write_open_clip(tmp_path / "oc", cfg, state, tokenizer=False)
    monkeypatch.setattr(oc, "BPE_DISTRIBUTIONS", ())
    monkeypatch.delenv(oc.BPE_ENV, raising=False)
    _hub_cache(monkeypatch, tmp_path / "empty-cache")       # offline (conftest) and nothing cached: unreachable
    with pytest.raises(AdvloraError) as e:
        load_model(str(folder))
    msg = str(e.value)
    assert "no tokenizer files" in msg and oc.BPE_ENV in msg and oc.CLIP_TOKENIZER_REPO in msg and "\n" not in msg
    bpe = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    bpe.write_bytes(gzip.compress(("\"bpe_simple_vocab_16e6.txt#version: 0.2\n"
                                   + "".join(f"{a} {b}\n" for a, b in MERGES)).encode()))
    monkeypatch.setenv(oc.BPE_ENV, str(bpe))
    model = load_model(str(folder))
    assert model.tokenizer("red cat")["input_ids"] == [VOCAB["<|startoftext|>"], VOCAB["red</w>"], VOCAB["cat</w>"],
                                                       VOCAB["<|endoftext|>"]]
    assert_matches(model, state, cfg, quick=False)


def _hub_cache(monkeypatch, folder):
    """The hub cache transformers reads (``huggingface_hub.constants.HF_HUB_CACHE``, read at each call)."""
    import huggingface_hub.constants

    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))


def test_without_tokenizer_files_the_clip_tokenizer_comes_from_the_hub_cache(tmp_path, monkeypatch):
    """Fetched once (here: a fake entry already in the hub cache, read offline), before any BPE file is sought."""
    cfg = model_cfg()
    state = clip_state(cfg, 0)
    folder = write_open_clip(tmp_path / "oc", cfg, state, tokenizer=False)
    monkeypatch.setattr(oc, "BPE_DISTRIBUTIONS", ())
    monkeypatch.delenv(oc.BPE_ENV, raising=False)
    cache = tmp_path / "hub"
    repo = cache / f"models--{oc.CLIP_TOKENIZER_REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    write_tokenizer(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    _hub_cache(monkeypatch, cache)
    model = load_model(str(folder))
    assert model.tokenizer("red cat")["input_ids"] == [VOCAB["<|startoftext|>"], VOCAB["red</w>"], VOCAB["cat</w>"],
                                                       VOCAB["<|endoftext|>"]]
    assert_matches(model, state, cfg, quick=False)


def test_a_converted_folder_is_reused_until_the_source_changes(tmp_path, monkeypatch):
    cfg = model_cfg()
    folder = write_open_clip(tmp_path / "oc", cfg, clip_state(cfg, 0))
    first = load_model(str(folder)).name_or_path
    calls = []
    real = oc._convert
    monkeypatch.setattr(oc, "_convert", lambda *a: (calls.append(1), real(*a)))
    assert load_model(str(folder)).name_or_path == first and not calls
    write_open_clip(folder, cfg, clip_state(cfg, 5))  # new weights: a new cache entry
    assert load_model(str(folder)).name_or_path != first and calls == [1]


def test_a_folder_with_transformers_weights_is_read_by_transformers(tmp_path):
    cfg = model_cfg()
    folder = write_open_clip(tmp_path / "oc", cfg, clip_state(cfg, 0))
    save_model(load_model(str(folder)), folder)  # both layouts side by side, as LAION's repos carry them
    assert not oc.is_open_clip_checkpoint(str(folder))
    assert load_model(str(folder)).name_or_path == str(folder)


# ---- through advlora ----------------------------------------------------------------------------------------
@pytest.fixture
def word_data(tmp_path):
    g = torch.Generator().manual_seed(0)
    recs = []
    words = ["red dog", "a cat", "dog on a cat", "red red cat", "cat dog", "a red dog"]
    for i, w in enumerate(words):
        Image.fromarray((torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()).save(tmp_path / f"{i}.png")
        recs.append({"image": f"{i}.png", "captions": [w, f"{w} {i}"]})
    (tmp_path / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return load_dataset(str(tmp_path / "ann.jsonl"))


def test_a_converted_model_goes_through_eval_attack_adapter_and_export(tmp_path, word_data):
    cfg = model_cfg(quick_gelu=True)
    folder = write_open_clip(tmp_path / "oc", cfg, clip_state(cfg, 0), layout="bin")
    model = load_model(str(folder))
    clean = evaluate_clean(model, word_data)
    assert 0 <= clean["r_mean"] <= 100
    out = evaluate_robust(model, word_data, ["pgd"], ThreatModel(eps="8/255", steps=2), sanity=False)
    assert out["attacks"]["pgd"]["metrics"]["r_mean"] <= out["clean"]["r_mean"] + 1e-9
    attach_adapter(model, "advlora", rank=2)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    saved = save_adapter(model, tmp_path / "adapter")
    peft_cfg = json.loads((saved / "adapter_config.json").read_text())
    assert peft_cfg["base_model_name_or_path"] == model.name_or_path  # the converted CLIPModel folder
    again = load_adapter(load_model(str(folder)), saved)
    x = images()
    with torch.no_grad():
        assert torch.allclose(again.encode_image(x), model.encode_image(x), atol=1e-5)
        assert torch.allclose(again.encode_text(CAPTIONS), model.encode_text(CAPTIONS), atol=1e-5)


def test_the_cli_evaluates_and_trains_an_open_clip_folder(tmp_path, word_data, capsys):
    cfg = model_cfg(quick_gelu=True)
    folder = write_open_clip(tmp_path / "oc", cfg, clip_state(cfg, 0))
    torch.save(visual_state(cfg, 7, prefix=""), tmp_path / "fare.pt")
    ann = tmp_path / "ann.jsonl"
    assert main(["eval", "--model", f"open_clip:{folder}+vision={tmp_path / 'fare.pt'}", "--data", str(ann),
                 "--attacks", "pgd", "--eps", "4/255", "--steps", "1", "--no-sanity", "--device", "cpu",
                 "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["robust"]["pgd@4/255"]["metrics"]["r_mean"] <= metrics["clean"]["r_mean"] + 1e-9
    assert main(["train", "--model", str(folder), "--data", str(ann), "--method", "advlora", "--rank", "2",
                 "--steps", "1", "--batch-size", "2", "--device", "cpu", "--out", str(tmp_path / "tr")]) == 0
    assert "Traceback" not in capsys.readouterr().err


# ---- the bench size ----------------------------------------------------------------------------------------
def test_the_bench_open_clip_size_is_laion_vit_b32_read_through_the_converter():
    assert "openclip-vit-b32" in SIZES and OPEN_CLIP_SIZES["openclip-vit-b32"] is LAION_VIT_B32
    config = oc.clip_config(LAION_VIT_B32, byte_tokenizer(77))
    with torch.device("meta"):
        full = CLIPModel(config)
    assert sum(p.numel() for p in full.parameters()) == 151_277_313  # open_clip's ViT-B-32 parameter count
    assert (config.vision_config.num_attention_heads, config.vision_config.hidden_act) == (12, "gelu")
    # the same builder on a small config: its features are open_clip's forward of the weights it drew
    small = model_cfg(text_cfg={"vocab_size": 600})
    model = open_clip_model("small", model_cfg=small)
    state = random_open_clip_state(small, seed=0)
    x = images()
    mean, std = torch.tensor(oc.OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(oc.OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert (model.encode_image(x, normalize=False) - ref_image(state, small, (x - mean) / std, False)
                ).abs().max() <= 1e-5
        ids = open_clip_ids(model, CAPTIONS, 16)
        assert (model.encode_text(CAPTIONS, normalize=False) - ref_text(state, small, ids, False)).abs().max() <= 1e-5


@pytest.mark.parametrize("spec,msg", [("open_clip:+vision=a.pt", "no base model"),
                                      ("open_clip:x+quick_gelu=maybe", "quick_gelu must be true or false"),
                                      ("open_clip:x+vision=a.pt+vision=b.pt", "given twice")])
def test_malformed_specs_are_one_line(spec, msg):
    with pytest.raises(AdvloraError, match=msg):
        oc.parse_spec(spec)
    assert oc.parse_spec("open_clip:hf-hub:org/m+quick_gelu=true+vision=/a+b.pt") == oc.OpenClipSpec(
        base="hf-hub:org/m", vision="/a+b.pt", quick_gelu=True)
