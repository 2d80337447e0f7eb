"""The vision-prompt seam and its two methods, ``vpt`` and ``visual-prompt``: where the prompts enter each tower,
what a zero prompt leaves unchanged, the attack's gradient through them, saving, loading, resuming and the CLI."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from train_utils import nudge

from advlora.adapters import adapter_info, attach_adapter, load_adapter, merge_adapter, save_adapter
from advlora.adapters.prompt_vision import FILE, prompts_of
from advlora.errors import AdvloraError

ARCHS = ("clip", "siglip", "blip")
TEXTS = ["red apple", "dog face", "rocket"]
_BASE: dict = {}


def fresh(arch: str = "clip", size: str = "test"):
    """A frozen random model (frozen as ``attach_adapter`` leaves the base: SigLIP's pooling head, an
    ``nn.MultiheadAttention``, takes another kernel when its weights require grad)."""
    key = (arch, size)
    if key not in _BASE:
        from advlora.models.tiny import random_model

        _BASE[key] = random_model(arch, size, seed=0).requires_grad_(False)
    return copy.deepcopy(_BASE[key])


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def features(m) -> torch.Tensor:
    return m.encode_image(images())


def prompt_parameters(m) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in m.named_parameters() if p.requires_grad}


# ---- what a zero prompt leaves unchanged ---------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_a_zero_frame_without_tokens_leaves_the_image_features_identical(arch):
    base = fresh(arch)
    want = features(base)
    m = attach_adapter(fresh(arch), "visual-prompt", init="zeros", n_tokens=0)
    assert torch.equal(features(m), want)                                   # bit for bit: x + 0 = x
    if arch == "blip":                                                      # ITM's image states too
        with torch.no_grad():
            assert torch.equal(m.image_states(images()), base.image_states(images()))
    nudge(m)
    assert (features(m) - want).abs().max() > 1e-3                          # a frame that is not zero acts


@pytest.mark.parametrize("arch", ARCHS)
def test_tokens_act_through_attention_and_removing_them_restores_the_model(arch):
    # zero tokens are not a no-op: they take part in attention (and CLIP's pre-LayerNorm maps them to its bias);
    # what is invariant is the model without them
    want = features(fresh(arch))
    zero = attach_adapter(fresh(arch), "vpt", init="zeros", n_tokens=3, depth=2)
    assert (features(zero) - want).abs().max() > 1e-4
    m = attach_adapter(fresh(arch), "vpt", n_tokens=3, depth=2)
    assert (features(m) - want).abs().max() > 1e-4
    prompts = prompts_of(m)
    prompts.remove(m)
    assert prompts_of(m) is None and torch.equal(features(m), want)
    assert not any(p.requires_grad for p in m.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_tokens_enter_each_layer_and_leave_before_the_pooling(arch):
    """Layer 0's tokens are appended to the embeddings; layer i's replace the last n tokens at its input (the
    earlier prompt outputs are discarded); the encoder's output, which the family pools (SigLIP's head over every
    token), holds the original tokens only."""
    n, depth = 2, 2                                       # the test models have 2 layers
    m = attach_adapter(fresh(arch), "vpt", n_tokens=n, depth=depth)
    sites, tokens = m.vision_sites(), prompts_of(m).source.tokens
    seen: dict = {}
    sites.embeddings.register_forward_hook(lambda mod, a, out: seen.__setitem__("emb", out))
    sites.layers[1].register_forward_pre_hook(
        lambda mod, a, kw: seen.__setitem__(1, a[0] if a else kw["hidden_states"]), with_kwargs=True)
    sites.encoder.register_forward_hook(lambda mod, a, out: seen.__setitem__("out", out.last_hidden_state))
    features(m)
    length = seen["out"].shape[1]
    assert seen["emb"].shape[1] == length + n and seen[1].shape[1] == length + n
    for key, layer in (("emb", 0), (1, 1)):
        assert torch.equal(seen[key][:, -n:], tokens[layer].expand(3, -1, -1)), key
    base = fresh(arch).vision_sites()
    assert length == base.embeddings(torch.zeros(1, 3, 32, 32)).shape[1]     # 1 + P (SigLIP: P) tokens pooled


# ---- the attack sees the prompt ----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ("clip", "siglip"))
@pytest.mark.parametrize("method", ("vpt", "visual-prompt"))
def test_the_attack_gradient_reaches_the_prompt_and_the_image(arch, method):
    from advlora.attacks import ThreatModel
    from advlora.training.config import AttackConfig
    from advlora.training.step import attack_batch

    m = attach_adapter(fresh(arch), method, depth=2) if method == "vpt" else attach_adapter(fresh(arch), method)
    x = images().requires_grad_(True)
    with torch.no_grad():
        text = m.encode_text(TEXTS)
    loss = torch.nn.functional.cross_entropy(m.logit_scale * m.encode_image(x) @ text.t(), torch.tensor([0, 1, 2]))
    loss.backward()
    assert x.grad.abs().sum() > 0
    params = prompt_parameters(m)
    assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values()), list(params)
    # the training attack differentiates through the prompt: a moved prompt moves the adversarial images
    cfg = AttackConfig(name="pgd", threat=ThreatModel(eps="4/255", steps=2, random_start=False))
    positives = torch.eye(3, dtype=torch.bool)
    adv = attack_batch(m, cfg, images(), text, positives, torch.Generator().manual_seed(0))
    moved = copy.deepcopy(m)
    nudge(moved)
    assert not torch.equal(adv, attack_batch(moved, cfg, images(), text, positives, torch.Generator().manual_seed(0)))


def test_a_deep_copy_has_its_own_prompt():
    m = attach_adapter(fresh(), "vpt", depth=2)
    twin = copy.deepcopy(m)
    assert torch.equal(features(twin), features(m))
    nudge(twin)
    assert not torch.equal(features(twin), features(m))                      # the copy's hooks read its own tokens
    before = features(m)
    prompts_of(twin).remove(twin)
    assert torch.equal(features(m), before)                                  # and removing them leaves m alone


def test_deep_prompts_under_recomputation_give_the_same_gradients():
    """``model.gradient_checkpointing`` recomputes each layer's forward; the prompts enter before it (a pre-hook)."""
    from advlora.models.recompute import enable_recompute

    m = attach_adapter(fresh(), "vpt", depth=2)
    r = copy.deepcopy(m)
    assert enable_recompute(r) > 0
    grads = []
    for model in (m, r):
        x = images().requires_grad_(True)
        model.encode_image(x).square().sum().backward()
        grads.append([x.grad, *(p.grad for p in prompt_parameters(model).values())])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


# ---- saving, loading, merging, counting ------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("opts", [{"method": "vpt", "depth": 2}, {"method": "visual-prompt"}],
                         ids=["vpt-deep", "visual-prompt"])
def test_a_saved_prompt_loads_with_identical_outputs(arch, opts, tmp_path):
    m = attach_adapter(fresh(arch), opts)
    nudge(m)
    want = features(m)
    save_adapter(m, tmp_path / "ad")
    meta = json.loads((tmp_path / "ad" / "advlora.json").read_text())
    assert meta["method"] == opts["method"] and meta["vision_prompt"]["n_tokens"] >= 1
    back = load_adapter(fresh(arch), tmp_path / "ad")
    assert torch.equal(features(back), want)
    assert adapter_info(back)["trainable"] == adapter_info(m)["trainable"] == sum(
        t.numel() for t in load_file(str(tmp_path / "ad" / FILE)).values())
    with pytest.raises(AdvloraError) as e:                                   # a wider model: one line
        load_adapter(fresh(arch, "tiny"), tmp_path / "ad")
    assert len(str(e.value).splitlines()) == 1 and "was made for another model" in str(e.value)


def test_prompts_count_their_parameters_and_cannot_be_merged():
    m = attach_adapter(fresh(), "visual-prompt")          # 32 px: a 4 px frame, 5 tokens of width 32
    assert adapter_info(m)["trainable"] == 2 * 3 * 4 * 32 + 2 * 3 * 24 * 4 + 5 * 32
    assert adapter_info(m)["n_tokens"] == 5
    assert adapter_info(attach_adapter(fresh(), "vpt", n_tokens=3, depth=2))["trainable"] == 2 * 3 * 32
    with pytest.raises(AdvloraError, match="cannot be merged") as e:
        merge_adapter(m)
    assert len(str(e.value).splitlines()) == 1 and prompts_of(m) is not None


@pytest.mark.parametrize("arch,opts,message", [
    ("clip", {"method": "visual-prompt", "prompt_size": 16}, "leaves no image inside the frame"),
    ("clip", {"method": "vpt", "depth": 3}, "deeper than the vision tower's 2 layers"),
    ("clip", {"method": "vpt", "n_tokens": 0}, "needs n_tokens >= 1"),
    ("siglip2", {"method": "vpt"}, "does not support the siglip2 family (supported: clip, blip, siglip)"),
])
def test_a_prompt_the_model_cannot_take_is_one_line_before_any_work(arch, opts, message):
    m = fresh(arch)
    with pytest.raises(AdvloraError) as e:
        attach_adapter(m, opts)
    assert len(str(e.value).splitlines()) == 1 and message in str(e.value)
    assert not any("advlora_prompt" in n for n, _ in m.named_modules())


# ---- training on class folders -----------------------------------------------------------------------------
CLASSES = ("red_apple", "green_leaf", "blue_sky")


@pytest.fixture
def class_folder(tmp_path):
    """train/ (16 images per class), val/ and test/ (2 each) class folders, one template."""
    g = torch.Generator().manual_seed(0)
    root = tmp_path / "cls"
    for split, n in (("train", 16), ("val", 2), ("test", 2)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                arr = (torch.rand(12, 12, 3, generator=g) * 80).to(torch.uint8)
                arr[..., c] += 150
                Image.fromarray(arr.numpy()).save(folder / f"{i}.png")
    (root / "templates.txt").write_text("a photo of a {}.\n")
    return root


@pytest.mark.parametrize("model", ["clip:tiny", "siglip:test"])
@pytest.mark.parametrize("method", ["vpt", "visual-prompt"])
def test_cli_trains_a_prompt_with_tecoa_on_a_class_folder(class_folder, tmp_path, capsys, method, model):
    from advlora.cli import main

    out = tmp_path / "run"
    assert main(["train", "--random-model", model, "--method", method, "--objective", "tecoa", "--data",
                 str(class_folder), "--shots", "16", "--steps", "2", "--batch-size", "8", "--attack-steps", "1",
                 "--device", "cpu", "--progress", "off", "--out", str(out), "--eval.val_limit", "6",
                 "--eval.test_limit", "6", "--eval.test_steps", "1", "--eval.robust", "false",
                 "--train.tensorboard", "false"]) == 0
    printed = capsys.readouterr().out
    trained = load_file(str(out / "adapter" / FILE))
    assert json.loads((out / "fewshot.json").read_text())["shots"] == 16
    assert f"{method}: 2 steps, {sum(t.numel() for t in trained.values())} trainable parameters" in printed
    base = fresh(*model.split(":"))
    back = load_adapter(copy.deepcopy(base), out / "adapter")
    assert not torch.equal(features(back), features(base))                  # the prompt trained and acts


def test_a_prompt_run_resumes_bit_for_bit(class_folder, tmp_path):
    from advlora.training.config import load_run_config
    from advlora.training.trainer import train

    def config():
        return load_run_config(overrides={
            "model": {"random": "clip:test"}, "adapter": {"method": "vpt", "depth": 2},
            "data": {"name": str(class_folder), "shots": 2},
            "train": {"steps": 3, "batch_size": 3, "device": "cpu", "progress": "off", "tensorboard": False,
                      "objective": "tecoa", "lr": 0.05, "warmup": 0, "checkpoint_every": 1},
            "attack": {"steps": 1}, "eval": {"val_limit": 6, "test_limit": 6, "test_steps": 1, "robust": False}})

    ref = train(config(), tmp_path / "ref")

    def cut(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(), tmp_path / "cut", on_step=cut)
    train(config(), tmp_path / "cut", resume=True)
    a, b = load_file(str(ref.run_dir / "adapter" / FILE)), load_file(str(tmp_path / "cut" / "adapter" / FILE))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    last = load_file(str(ref.run_dir / "checkpoints" / "step-000003" / "trainable.safetensors"))
    assert last and all("advlora_prompt" in k for k in last)                # the checkpoint holds the prompt alone
    start = prompts_of(attach_adapter(fresh(), "vpt", depth=2)).state_dict()
    assert any(not start[k].equal(a[k]) for k in a)                         # and it trained
