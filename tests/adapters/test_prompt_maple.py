"""``maple``: coupled multimodal prompts (MaPLe; FAP's reversed coupling; ``vlp``, AdvVLP's independent prompts)
built on the two prompt seams: which side is learned, the attack's gradient through both towers and the coupling,
saving, loading, resuming and training from the CLI."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from train_utils import nudge, save_test_model

from advlora.adapters import adapter_info, attach_adapter, load_adapter, merge_adapter, save_adapter
from advlora.adapters.prompt_vision import prompts_of
from advlora.errors import AdvloraError
from advlora.models.prompts import for_templates
from advlora.models.text_prompt import text_prompt_of
from advlora.models.tiny import random_model

COUPLINGS = ("text-to-vision", "vision-to-text", "none")
NAMES = ["red apple", "dog face", "rocket"]
_MODELS: dict = {}


def fresh(arch: str = "clip"):
    """A frozen random test model of ``arch`` (2 layers per tower; one tokenizer for all), copied."""
    if arch not in _MODELS:
        tok = next(iter(_MODELS.values())).tokenizer if _MODELS else None
        _MODELS[arch] = random_model(arch, "test", seed=0, tokenizer=tok).requires_grad_(False)
    return copy.deepcopy(_MODELS[arch])


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def classes(m) -> torch.Tensor:
    return for_templates(m, ("a photo of a {}.",)).encode_text(NAMES)


def learned(m) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in m.named_parameters() if p.requires_grad}


# ---- the coupling --------------------------------------------------------------------------------------------
def test_the_coupling_option_says_which_side_is_learned_and_which_is_computed():
    kinds = {c: {n.rsplit(".", 1)[-1] if "maps" not in n else "maps" for n in learned(
        attach_adapter(fresh(), "maple", coupling=c))} for c in COUPLINGS}
    assert kinds["text-to-vision"] == {"ctx", "deep_ctx", "maps"}          # text learned, vision = maps(text)
    assert kinds["vision-to-text"] == {"ctx", "tokens", "maps"}            # deep vision learned, text = maps(vision)
    assert kinds["none"] == {"ctx", "deep_ctx", "tokens"}                  # both learned, nothing linking them
    assert attach_adapter(fresh(), "vlp").advlora_adapter.config.coupling == "none"

    # what each layer receives: the computed side is the map of the learned one
    for coupling in ("text-to-vision", "vision-to-text"):
        m = attach_adapter(fresh(), "maple", coupling=coupling)
        text, source = text_prompt_of(m), prompts_of(m).source
        seen: dict = {}
        m.vision_sites().layers[1].register_forward_pre_hook(
            lambda mod, a, kw, seen=seen: seen.__setitem__("vision", (a[0] if a else kw["hidden_states"])[0, -2:]),
            with_kwargs=True)
        m.text_prompt_sites()[1][1].register_forward_pre_hook(
            lambda mod, a, kw, seen=seen: seen.__setitem__("text", (a[0] if a else kw["hidden_states"])[0, 1:3]),
            with_kwargs=True)
        with torch.no_grad():
            m.encode_image(images(1)), m.encode_text(["rocket"])
            if coupling == "text-to-vision":
                assert torch.allclose(seen["vision"], source.maps[1](text.deep_ctx[0]))
                assert torch.equal(seen["text"], text.deep_ctx[0])
            else:
                assert torch.equal(seen["vision"], source.tokens[0])
                assert torch.allclose(seen["text"], source.maps[1](source.tokens[0]))
                assert text.deep_ctx is None
            layer0 = source(0)
        assert torch.allclose(layer0, source.maps[0](text.ctx))            # layer 0 is MaPLe's in both directions
    # MaPLe's deep maps start as copies of one layer; layer 0's is its own draw
    maps = prompts_of(attach_adapter(fresh(), "maple")).source.maps
    assert not torch.equal(maps[0].weight, maps[1].weight)


def test_the_context_starts_from_the_phrase_and_the_depth_is_capped_at_the_towers():
    m = attach_adapter(fresh(), "maple")                                   # n_ctx 2 of "a photo of a"
    text = text_prompt_of(m)
    phrase = m.tokenizer("a photo of a", add_special_tokens=False)["input_ids"]
    assert text.n_ctx == 2 and text.prefix == tuple(phrase[2:])
    assert text.depth == 1 and prompts_of(m).depth == 2 and prompts_of(m).n_tokens == 2   # 9 capped at 2 layers
    shallow = attach_adapter(fresh(), "maple", depth=1)
    assert text_prompt_of(shallow).deep_ctx is None and prompts_of(shallow).depth == 1
    for opts, msg in (({"depth": 3}, "deeper than the model's towers"), ({"coupling": "both"}, "adapter coupling"),
                      ({"class_position": "front"}, "class_position end"), ({"n_ctx": 5}, "longer than ctx_phrase")):
        model = fresh()
        with pytest.raises(AdvloraError, match=msg) as e:
            attach_adapter(model, "maple", **opts)
        assert len(str(e.value).splitlines()) == 1
        assert text_prompt_of(model) is None and prompts_of(model) is None   # nothing attached


def test_a_deep_copy_keeps_its_two_sides_linked():
    m = attach_adapter(fresh(), "maple", coupling="vision-to-text")
    twin = copy.deepcopy(m)
    assert text_prompt_of(twin).coupling is prompts_of(twin).source
    assert prompts_of(twin).source.text is text_prompt_of(twin)
    with torch.no_grad():
        before = m.encode_text(["rocket"])
        prompts_of(twin).source.tokens.add_(1.0)                            # the copy's learned vision prompts
        assert torch.equal(m.encode_text(["rocket"]), before)
        assert not torch.allclose(twin.encode_text(["rocket"]), before)     # move the copy's text, not m's


# ---- the attack sees the prompts -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["clip", "siglip"])
@pytest.mark.parametrize("coupling", COUPLINGS)
def test_the_attack_gradient_reaches_both_prompts_the_coupling_and_the_image(arch, coupling):
    from advlora.attacks import ThreatModel
    from advlora.training.config import AttackConfig
    from advlora.training.step import attack_batch, class_positives

    m = attach_adapter(fresh(arch), "maple", coupling=coupling)
    x = images().requires_grad_(True)
    labels = torch.tensor([0, 1, 2])
    F.cross_entropy(m.logit_scale * m.encode_image(x) @ classes(m).t(), labels).backward()
    assert x.grad.abs().sum() > 0
    params = learned(m)
    assert any("maps" in n for n in params) == (coupling != "none")
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values()), [
        n for n, p in params.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert all(p.grad is None for p in m.hf_model.parameters() if not p.requires_grad)     # the towers stay frozen

    cfg = AttackConfig(name="pgd", threat=ThreatModel(eps="8/255", steps=2, random_start=False))

    def attack(model):
        with torch.no_grad():
            text = classes(model)
        return attack_batch(model, cfg, images(), text, class_positives(labels, 3), torch.Generator().manual_seed(0))

    moved = copy.deepcopy(m)
    nudge(moved)
    assert not torch.equal(attack(m), attack(moved))                        # the adversary reads the prompts


# ---- files ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("coupling", COUPLINGS)
def test_a_saved_prompt_loads_with_identical_outputs_counts_and_refuses_merging(coupling, tmp_path):
    m = attach_adapter(fresh(), "maple", coupling=coupling)
    nudge(m)
    with torch.no_grad():
        want = (m.encode_image(images()), classes(m))
    save_adapter(m, tmp_path / "ad")
    meta = json.loads((tmp_path / "ad" / "advlora.json").read_text())
    assert meta["prompt"]["coupling"] == coupling and meta["prompt"]["depth"] == 2 and meta["prompt"]["n_ctx"] == 2
    files = [load_file(str(tmp_path / "ad" / f)) for f in ("prompt.safetensors", "vision_prompt.safetensors")]
    back = load_adapter(fresh(), tmp_path / "ad")
    with torch.no_grad():
        assert torch.equal(back.encode_image(images()), want[0]) and torch.equal(classes(back), want[1])
    assert adapter_info(back)["trainable"] == adapter_info(m)["trainable"] == sum(
        t.numel() for f in files for t in f.values())
    with pytest.raises(AdvloraError, match="cannot be merged") as e:
        merge_adapter(back)
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(AdvloraError, match="made for another model") as e:   # wider towers
        load_adapter(random_model("clip", "tiny", seed=0, tokenizer=m.tokenizer), tmp_path / "ad")
    assert len(str(e.value).splitlines()) == 1


def test_the_prompts_count_their_parameters():
    """MaPLe's count on the test model (width 32 both towers, 2 layers): ctx and one deep context (2 x 32 each)
    plus two maps 32 -> 32 with bias; AdvVLP's: the two text contexts and two layers of vision tokens."""
    assert adapter_info(attach_adapter(fresh(), "maple"))["trainable"] == 2 * 2 * 32 + 2 * (32 * 32 + 32)
    assert adapter_info(attach_adapter(fresh(), "maple", coupling="vision-to-text"))["trainable"] == (
        2 * 32 + 2 * 32 + 2 * (32 * 32 + 32))
    assert adapter_info(attach_adapter(fresh(), "vlp"))["trainable"] == 2 * 2 * 32 + 2 * 2 * 32


# ---- training on class folders ------------------------------------------------------------------------------------
CLASSES = ("red_apple", "green_leaf", "blue_sky")


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls") / "cls"
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 4), ("val", 1), ("test", 2)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                arr = (torch.rand(12, 12, 3, generator=g) * 80).to(torch.uint8)
                arr[..., c] += 150
                Image.fromarray(arr.numpy()).save(folder / f"{i}.png")
    (root / "templates.txt").write_text("a photo of a {}.\n")
    return root


@pytest.mark.parametrize("model,method,objective,extra", [
    ("tiny-clip", "maple", "tecoa", []), ("tiny-clip", "vlp", "tecoa", []),
    ("siglip", "maple", "tecoa", []), ("siglip", "vlp", "tecoa", []),
    ("tiny-clip", "maple", "fap", ["--adapter.coupling", "vision-to-text"])])
def test_cli_trains_on_a_class_folder(class_folder, tmp_path, capsys, model, method, objective, extra):
    from advlora.cli import main

    flags = ["--random-model", "clip:tiny"] if model == "tiny-clip" else ["--model", str(save_test_model(
        tmp_path / "siglip", "siglip"))]
    out = tmp_path / "run"
    assert main(["train", *flags, "--method", method, "--objective", objective, "--data", str(class_folder),
                 "--shots", "16", "--steps", "2", "--batch-size", "6", "--attack-steps", "1", "--device", "cpu",
                 "--progress", "off", "--out", str(out), "--eval.val_limit", "3", "--eval.test_limit", "6",
                 "--eval.test_steps", "1", "--eval.robust", "false", "--train.tensorboard", "false",
                 "--train.warmup", "0", *extra]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "maple" and metrics["objective"] == objective and metrics["n_texts"] == 3
    trained = {**load_file(str(out / "adapter" / "prompt.safetensors")),
               **load_file(str(out / "adapter" / "vision_prompt.safetensors"))}
    n = sum(t.numel() for t in trained.values())
    assert f"maple: 2 steps, {n} trainable parameters" in capsys.readouterr().out
    meta = json.loads((out / "adapter" / "advlora.json").read_text())
    expected = {"vlp": "none"}.get(method, "vision-to-text" if extra else "text-to-vision")
    assert meta["prompt"]["coupling"] == expected
    from advlora.models import load_model

    base = random_model("clip", "tiny", seed=0) if model == "tiny-clip" else load_model(flags[1], device="cpu")
    start = attach_adapter(base, method, **({"coupling": "vision-to-text"} if extra else {}))
    begun = {**text_prompt_of(start).state_dict(), **{k: v for k, v in prompts_of(start).state_dict().items()}}
    assert begun.keys() == trained.keys() and any(not begun[k].equal(trained[k]) for k in trained)   # it trained


def test_a_maple_run_resumes_bit_for_bit(class_folder, tmp_path):
    from advlora.training import load_run_config, train

    model_dir = save_test_model(tmp_path / "model")

    def config():
        return load_run_config(overrides={
            "model": {"name": str(model_dir)}, "adapter": {"method": "maple", "coupling": "vision-to-text"},
            "data": {"name": str(class_folder), "shots": 2},
            "train": {"steps": 3, "batch_size": 3, "device": "cpu", "progress": "off", "tensorboard": False,
                      "objective": "tecoa", "lr": 0.05, "warmup": 0, "checkpoint_every": 1},
            "attack": {"steps": 1}, "eval": {"val_limit": 3, "test_limit": 3, "test_steps": 1, "robust": False}})

    ref = train(config(), tmp_path / "ref")

    def cut(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(), tmp_path / "cut", on_step=cut)
    train(config(), tmp_path / "cut", resume=True)
    for f in ("prompt.safetensors", "vision_prompt.safetensors"):
        a, b = load_file(str(ref.run_dir / "adapter" / f)), load_file(str(tmp_path / "cut" / "adapter" / f))
        assert a and a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), f
    last = load_file(str(ref.run_dir / "checkpoints" / "step-000003" / "trainable.safetensors"))
    assert {k.split(".")[0] for k in last} == {"text_prompt", "hf_model"} and all(
        "advlora_prompt" in k for k in last if k.startswith("hf_model"))    # the prompts alone, both sides
    from advlora.models import load_model

    start = attach_adapter(load_model(str(model_dir), device="cpu"), "maple", coupling="vision-to-text")
    a = load_file(str(ref.run_dir / "adapter" / "vision_prompt.safetensors"))
    assert any(not prompts_of(start).state_dict()[k].equal(a[k]) for k in a)           # and it trained
