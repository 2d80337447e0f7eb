"""Learned text prompts: the seam in the text tower (``advlora.models.text_prompt``), the ``coop`` method and
APT's objectives (``apt``, ``apt-constant``)."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from advlora.adapters import adapter_info, attach_adapter, load_adapter, merge_adapter, save_adapter
from advlora.cli import main
from advlora.errors import AdvloraError
from advlora.models.prompts import for_templates
from advlora.models.text_prompt import prompt_disabled, text_prompt_of
from advlora.models.tiny import random_model

NAMES = ["red apple", "dog face", "rocket", "green heart"]
TEMPLATE = ("a photo of a {}.",)
_MODELS: dict = {}


def fresh(arch: str = "clip"):
    """A random test model of ``arch`` (all sharing one tokenizer), copied."""
    if arch not in _MODELS:
        tok = next(iter(_MODELS.values())).tokenizer if _MODELS else None
        _MODELS[arch] = random_model(arch, "test", seed=0, tokenizer=tok)
    return copy.deepcopy(_MODELS[arch])


def tiny_clip():
    """The tiny CLIP of ``advlora list methods``: the tiny defaults' architecture, random weights."""
    if "tiny-clip" not in _MODELS:
        _MODELS["tiny-clip"] = random_model("clip", "tiny", seed=0)
    return copy.deepcopy(_MODELS["tiny-clip"])


@torch.no_grad()
def classifier(model, names=NAMES, templates=TEMPLATE) -> torch.Tensor:
    return for_templates(model, templates).encode_text(list(names))


def shuffle_context(model, seed: int = 1) -> None:
    """A context away from its initialisation (random vectors of the embeddings' scale)."""
    ctx = text_prompt_of(model).ctx
    with torch.no_grad():
        ctx.copy_(torch.randn(ctx.shape, generator=torch.Generator().manual_seed(seed)) * ctx.abs().mean() * 3)


# ---- the seam -------------------------------------------------------------------------------------------------
def phrase_matches_template(m, build) -> None:
    """``coop`` from "a photo of a" (all of it, or its first 2 tokens) gives the classifier of "a photo of a {}."."""
    zero_shot = classifier(m)
    attach_adapter(m, "coop")                                             # init=phrase "a photo of a", end
    phrase = m.tokenizer("a photo of a", add_special_tokens=False)["input_ids"]
    assert text_prompt_of(m).n_ctx == len(phrase)
    # the dataset's templates are the prompt's business now: any templates give the same class embeddings
    assert (classifier(m, templates=("{}", "a drawing of a {}.")) - zero_shot).abs().max() <= 1e-5
    assert adapter_info(m)["trainable"] == text_prompt_of(m).ctx.numel()
    # a context of the first 2 tokens keeps the rest as fixed tokens (MaPLe's "a photo" + "of a"): the same
    half = attach_adapter(build(), "coop", n_ctx=2)
    assert text_prompt_of(half).n_ctx == 2 and text_prompt_of(half).prefix == tuple(phrase[2:])
    assert (classifier(half) - zero_shot).abs().max() <= 1e-5
    shuffle_context(m)
    assert (classifier(m) - zero_shot).abs().max() > 1e-3                 # the context is what the tower reads


@pytest.mark.parametrize("arch", ["tiny-clip", "siglip", "blip"])
def test_a_context_from_the_phrase_is_the_single_template_classifier(arch):
    build = tiny_clip if arch == "tiny-clip" else (lambda: fresh(arch))
    phrase_matches_template(build(), build)


@pytest.mark.slow
def test_a_context_from_the_phrase_is_the_template_classifier_of_the_pretrained_tiny_clip(monkeypatch):
    """The same on the pre-trained tiny-clip (the default cache: built there on first use, minutes)."""
    from advlora.models import load_model

    monkeypatch.delenv("ADVLORA_HOME", raising=False)
    base = load_model("tiny-clip", device="cpu")
    phrase_matches_template(copy.deepcopy(base), lambda: copy.deepcopy(base))


def test_the_layout_places_the_class_where_the_position_says():
    m = fresh()
    ids = {p: attach_adapter(fresh(), "coop", init="random", n_ctx=4, class_position=p).text_prompt.tokenize_classes(
        m, ["red apple"])["input_ids"][0].tolist() for p in ("end", "middle", "front")}
    name = m.tokenizer("red apple.", add_special_tokens=False)["input_ids"]
    cls, sep = m.tokenizer("x")["input_ids"][0], m.tokenizer("x")["input_ids"][-1]
    apple, dot = name[:-1], name[-1:]
    assert ids["end"] == [cls, -1, -2, -3, -4, *apple, *dot, sep]
    assert ids["middle"] == [cls, -1, -2, *apple, -3, -4, *dot, sep]
    assert ids["front"] == [cls, *apple, -1, -2, -3, -4, *dot, sep]
    # captions get the context before them; SigLIP's padding to max_length keeps its length
    s = attach_adapter(fresh("siglip"), "coop")
    tok = s.tokenize(["red apple", "rocket"])
    assert tok["input_ids"].shape[1] == s.max_length and (tok["input_ids"][:, 1:5] < 0).all()
    with prompt_disabled(s):
        assert (s.tokenize(["rocket"])["input_ids"] >= 0).all()


def test_random_context_and_bad_settings_are_one_line():
    m = attach_adapter(fresh(), "coop", init="random", seed=3)
    ctx = text_prompt_of(m).ctx
    assert ctx.shape[0] == 4 and 0.01 < float(ctx.detach().std()) < 0.03                 # CoOp's N(0, 0.02^2)
    again = attach_adapter(fresh(), "coop", init="random", seed=3)
    assert torch.equal(text_prompt_of(again).ctx, ctx)
    for opts, msg in (({"class_specific": True}, "class-specific context"), ({"n_ctx": 9}, "longer than ctx_phrase"),
                      ({"class_position": "left"}, "class_position"), ({"n_ctx": 0}, "positive integer")):
        with pytest.raises(AdvloraError, match=msg) as e:
            attach_adapter(fresh(), "coop", **opts)
        assert len(str(e.value).splitlines()) == 1


# ---- attacks see the prompt -----------------------------------------------------------------------------------
def test_the_gradient_reaches_the_prompt_and_the_image_and_the_attack_sees_it():
    from advlora.attacks import ThreatModel
    from advlora.training.config import AttackConfig
    from advlora.training.step import attack_batch, class_positives

    m = attach_adapter(fresh(), "coop")
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 3])
    logits = m.logit_scale * m.encode_image(x) @ for_templates(m, TEMPLATE).encode_text(NAMES).t()
    F.cross_entropy(logits, labels).backward()
    assert x.grad.abs().sum() > 0 and text_prompt_of(m).ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.hf_model.parameters())                  # the towers stay frozen

    cfg = AttackConfig(name="pgd", threat=ThreatModel(eps="8/255", steps=3, random_start=False))
    pos = class_positives(labels, len(NAMES))

    def attack(model):
        return attack_batch(model, cfg, x.detach(), classifier(model), pos, torch.Generator().manual_seed(0))

    moved = copy.deepcopy(m)
    shuffle_context(moved)
    assert not torch.equal(attack(m), attack(moved))                        # the adversary reads the prompt


# ---- files ------------------------------------------------------------------------------------------------------
def test_a_saved_prompt_loads_with_identical_outputs_and_refuses_merging(tmp_path):
    m = attach_adapter(fresh(), "coop", init="random", n_ctx=3, class_position="middle")
    shuffle_context(m)
    want = classifier(m)
    save_adapter(m, tmp_path / "ad")
    meta = json.loads((tmp_path / "ad" / "advlora.json").read_text())
    assert meta["prompt"] == {"tower": "text", "n_ctx": 3, "width": 32, "prefix": "", "prefix_ids": [],
                              "class_position": "middle"}
    assert list(load_file(str(tmp_path / "ad" / "prompt.safetensors"))) == ["ctx"]
    back = load_adapter(fresh(), tmp_path / "ad")
    assert torch.equal(classifier(back), want)
    with torch.no_grad():
        assert torch.equal(back.encode_text(["rocket"]), m.encode_text(["rocket"]))
    with pytest.raises(AdvloraError, match="cannot be merged") as e:
        merge_adapter(back)
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(AdvloraError, match="made for another model"):
        load_adapter(random_model("clip", "tiny", seed=0, tokenizer=m.tokenizer), tmp_path / "ad")


def test_list_methods_counts_the_context(capsys):
    assert main(["list", "methods", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["coop"]
    width = tiny_clip().text_prompt_sites()[0].weight.shape[1]
    n_ctx = len(tiny_clip().tokenizer("a photo of a", add_special_tokens=False)["input_ids"])
    assert f"({n_ctx * width:,} trainable on the tiny CLIP" in listed


# ---- training on class folders ------------------------------------------------------------------------------------
CLASSES = ("red_apple", "green_leaf", "blue_sky")


def write_classes(root, names=CLASSES, splits=(("train", 4), ("val", 1), ("test", 2))):
    g = torch.Generator().manual_seed(0)
    for split, n in splits:
        for c, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                arr = (torch.rand(12, 12, 3, generator=g) * 80).to(torch.uint8)
                arr[..., c % 3] += 150
                Image.fromarray(arr.numpy()).save(folder / f"{i}.png")
    (root / "templates.txt").write_text("a photo of a {}.\n")
    return root


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    return write_classes(tmp_path_factory.mktemp("cls") / "cls")


def cli_train(model: list[str], folder, out, objective: str, *extra: str) -> dict:
    assert main(["train", *model, "--method", "coop", "--objective", objective, "--data", str(folder),
                 "--shots", "16", "--steps", "2", "--batch-size", "6", "--attack-steps", "1", "--device", "cpu",
                 "--progress", "off", "--out", str(out), "--eval.val_limit", "3", "--eval.test_limit", "6",
                 "--eval.test_steps", "1", "--eval.robust", "false", "--train.tensorboard", "false",
                 "--train.warmup", "0", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("model,objective", [("tiny-clip", "tecoa"), ("siglip", "tecoa"), ("tiny-clip", "apt"),
                                             ("siglip", "apt-constant")])
def test_cli_trains_coop_on_a_class_folder(class_folder, tmp_path, model, objective):
    from train_utils import save_test_model

    flags = ["--random-model", "clip:tiny"] if model == "tiny-clip" else ["--model", str(save_test_model(
        tmp_path / "siglip", "siglip"))]
    metrics = cli_train(flags, class_folder, tmp_path / "run", objective)
    assert metrics["method"] == "coop" and metrics["objective"] == objective and metrics["n_texts"] == 3
    eff = json.loads((tmp_path / "run" / "efficiency.json").read_text())
    trained = load_file(str(tmp_path / "run" / "adapter" / "prompt.safetensors"))["ctx"]
    assert eff["trainable"] == trained.numel()
    base = tiny_clip() if model == "tiny-clip" else load_adapter_base(tmp_path / "siglip")
    start = text_prompt_of(attach_adapter(base, "coop")).ctx
    assert not torch.equal(trained, start.detach())                 # the context trained (the towers cannot)


def load_adapter_base(folder):
    from advlora.models import load_model

    return load_model(str(folder), device="cpu")


def test_apt_onfly_and_constant_attack_different_prompts(class_folder, tmp_path):
    """With a random context the constant prompt (the tower without it) differs from the current one: the two
    objectives then train differently; with the phrase "a photo of a" they start equal (APT's constant prompt
    is "a photo of a {c}."), so their first step is the same."""
    from train_utils import save_test_model

    model = ["--model", str(save_test_model(tmp_path / "clip"))]
    ctx = {}
    for objective in ("apt", "apt-constant"):
        for init in ("random", "phrase"):
            out = tmp_path / f"{objective}-{init}"
            cli_train(model, class_folder, out, objective, "--adapter.init", init, "--steps", "1",
                      "--attack-steps", "2", "--attack.eps", "16/255")
            ctx[objective, init] = load_file(str(out / "adapter" / "prompt.safetensors"))["ctx"]
    assert not torch.equal(ctx["apt", "random"], ctx["apt-constant", "random"])
    assert torch.allclose(ctx["apt", "phrase"], ctx["apt-constant", "phrase"], atol=1e-6)


def test_coop_resumes_bit_for_bit_and_applies_to_other_class_names(class_folder, tmp_path):
    from train_utils import save_test_model

    from advlora.training import load_run_config, train

    model_dir = save_test_model(tmp_path / "model")

    def config():
        return load_run_config(overrides={
            "model": {"name": str(model_dir)}, "adapter": {"method": "coop"},
            "data": {"name": str(class_folder), "shots": 2},
            "train": {"steps": 3, "batch_size": 3, "device": "cpu", "progress": "off", "tensorboard": False,
                      "objective": "apt", "lr": 0.05, "warmup": 0, "checkpoint_every": 1},
            "attack": {"steps": 1}, "eval": {"val_limit": 3, "test_limit": 3, "test_steps": 1, "robust": False}})

    ref = train(config(), tmp_path / "ref")

    def cut(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(), tmp_path / "cut", on_step=cut)
    train(config(), tmp_path / "cut", resume=True)
    a = load_file(str(ref.run_dir / "adapter" / "prompt.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter" / "prompt.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)

    # base-to-new: the prompt trained on the three colours is the classifier of other class names
    from advlora.models import load_model

    trained = load_adapter(load_model(str(model_dir), device="cpu"), ref.run_dir / "adapter")
    new = ["dog face", "rocket"]
    manual = trained.tokenize([f"{n}." for n in new])                  # [SOS, ctx, name ., EOS] by hand
    with torch.no_grad():
        assert torch.allclose(classifier(trained, new), trained.encode_text(manual), atol=1e-6)
    assert (classifier(trained, new) - classifier(load_model(str(model_dir), device="cpu"), new)).abs().max() > 1e-4
    other = write_classes(tmp_path / "other", names=("dog_face", "rocket"), splits=(("test", 2),))
    ev = tmp_path / "ev"
    assert main(["eval", "--model", str(model_dir), "--adapter", str(ref.run_dir / "adapter"), "--data", str(other),
                 "--split", "test", "--attacks", "pgd", "--attack-steps", "1", "--no-sanity", "--out", str(ev)]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert "top1" in m["clean"] and "top1" in m["robust"]["pgd@4/255"]["metrics"] and m["n_texts"] == 2


def test_deep_contexts_replace_the_slots_at_the_input_of_later_layers():
    """The seam MaPLe's text side builds on: deep contexts replace the slots' hidden states at layer i's input."""
    from advlora.models.text_prompt import TextPrompt, attach_text_prompt

    m = fresh()
    width = m.text_prompt_sites()[0].weight.shape[1]
    g = torch.Generator().manual_seed(0)
    deep = torch.randn(1, 3, width, generator=g)
    prompt = attach_text_prompt(m, TextPrompt(torch.randn(3, width, generator=g) * 0.02, deep=deep))
    seen = {}
    layer = m.text_prompt_sites()[1][1]
    layer.register_forward_hook(lambda mod, args, kwargs, out: seen.update(x=(args or [kwargs["hidden_states"]])[0]),
                                with_kwargs=True)
    with torch.no_grad():
        before = m.encode_text(["red apple"])
    assert torch.equal(seen["x"][0, 1:4], deep[0])                   # slots 1..3 of layer 1's input
    with torch.no_grad():
        prompt.deep_ctx.add_(torch.randn(prompt.deep_ctx.shape, generator=g))
        assert not torch.allclose(m.encode_text(["red apple"]), before)
    with pytest.raises(AdvloraError, match="needs as many text layers"):
        attach_text_prompt(fresh(), TextPrompt(torch.zeros(3, width), deep=torch.zeros(2, 3, width)))
