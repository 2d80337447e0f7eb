"""The contract every registered backbone family keeps (``advlora.models.family``), on random tiny models: shapes,
pixel gradients, an attack that lowers recall, the adapter round trip, one training step per adapter method
with the family's own loss, save / load, and a resumed evaluation. A family registered later inherits it. The
last tests declare a throw-away family and run it through the trainer, an evaluation with attack and adapter
export without any package file knowing its name."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from train_utils import WORDS, tiny_config, write_data

from advlora.adapters import METHODS, attach_adapter, load_adapter, merge_adapter, save_adapter
from advlora.adapters import method as adapter_methods
from advlora.attacks import ThreatModel
from advlora.data import load_dataset
from advlora.errors import AdvloraError
from advlora.evaluation import distributed
from advlora.evaluation.robust import evaluate_robust
from advlora.models import FAMILIES, load_model, save_model
from advlora.models import family as registry
from advlora.models.clip import CLIPWrapper, clip_config
from advlora.models.family import Family
from advlora.models.tiny import random_for_size, random_model
from advlora.training.config import AttackConfig
from advlora.training.step import Dist, TrainTask, attack_batch

FAMILY_NAMES = list(FAMILIES)
_MODELS: dict[str, object] = {}


def base(name: str):
    """One random test-size model per family (copied by each test that changes it)."""
    if name not in _MODELS:
        _MODELS[name] = random_model(name, "test", seed=0).requires_grad_(False)
    return copy.deepcopy(_MODELS[name])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_dataset(str(write_data(tmp_path_factory.mktemp("fam-data"), n=8)))


def _pixels(n: int = 3, side: int = 40) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_shapes_and_pixel_gradients(name):
    m = base(name)
    assert m.arch == name and isinstance(m, FAMILIES[name].wrapper)
    x = _pixels().requires_grad_(True)
    img, txt = m.encode_image(x), m.encode_text(WORDS[:4])
    assert img.shape == (3, txt.shape[1]) and txt.shape[0] == 4
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    logits = m(x, WORDS[:4])
    assert logits.shape == (3, 4) and bool(torch.isfinite(logits).all())
    m.contrastive_loss(img, txt[:3]).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    # the tokenize policy: "max_length" families see every caption at the same length
    tok = m.tokenize(["a", WORDS[5] + " " + WORDS[7]])
    if m.text_padding == "max_length":
        assert tok["input_ids"].shape[1] == m.max_length


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_an_attack_lowers_recall_and_resumes(name, data, tmp_path):
    m = base(name)
    threat = ThreatModel(eps="32/255", steps=5, seed=0)
    with distributed.EvalSession(state=tmp_path / "state", fingerprint={"f": name}):
        first = evaluate_robust(m, data, ["pgd"], threat, sanity=False)["attacks"]["pgd"]
    assert first.clean["r_mean"] > first.metrics["r_mean"], (first.clean, first.metrics)
    assert first.checks["max_perturbation"] <= 32 / 255 + 1e-6
    # a resumed evaluation reads the saved batches and gives the same numbers
    with distributed.EvalSession(state=tmp_path / "state", resume=True, fingerprint={"f": name}):
        again = evaluate_robust(m, data, ["pgd"], threat, sanity=False)["attacks"]["pgd"]
    assert again.metrics == first.metrics


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_adapter_attach_merge_export_round_trip(name, tmp_path):
    m = attach_adapter(base(name), "advlora", rank=2, towers="both", alpha_init=0.5)
    x = _pixels(2)
    with torch.no_grad():
        for n, p in m.hf_model.named_parameters():
            if p.requires_grad and "lora_B" in n:
                p.add_(0.05 * torch.randn_like(p))
        want_img, want_txt = m.encode_image(x), m.encode_text(WORDS[:2])
    assert torch.all(torch.tensor([p.requires_grad for n, p in m.hf_model.named_parameters()
                                   if "lora" in n]))
    # targets stay inside the transformer layers of both towers (no pooling head, no projection)
    layers = list(m.advlora_adapter.layers)
    assert layers and all(".layers." in n or ".layer." in n for n in layers), layers
    assert {m.tower_of(n) for n in layers} == {"vision", "text"}
    out = save_adapter(m, tmp_path / "adapter")
    assert (out / "adapter_model.safetensors").exists() and json.loads((out / "adapter_config.json").read_text())
    fresh = load_adapter(base(name), out)
    with torch.no_grad():
        assert torch.allclose(fresh.encode_image(x), want_img, atol=1e-5)
        assert torch.allclose(fresh.encode_text(WORDS[:2]), want_txt, atol=1e-5)
        merge_adapter(fresh)
        assert not any("lora" in n for n, _ in fresh.hf_model.named_parameters())
        assert torch.allclose(fresh.encode_image(x), want_img, atol=1e-4)


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("method", METHODS)
def test_one_training_step_per_method(name, method):
    supported = adapter_methods.get(method).families
    if supported is not None and name not in supported:     # refused by its declaration, in one line
        with pytest.raises(AdvloraError, match=f"does not support the {name} family"):
            attach_adapter(base(name), method, rank=2, towers="both")
        return
    m = attach_adapter(base(name), method, rank=2, towers="both")
    trainable = [p for p in m.parameters() if p.requires_grad]
    assert bool(trainable) == (method != "frozen")
    x, texts = _pixels(4), WORDS[:4]
    tokens = m.tokenize(texts)
    positives = torch.eye(4, dtype=torch.bool)
    cfg = AttackConfig(name="pgd", threat=ThreatModel(eps="4/255", steps=1))
    adv = attack_batch(m, cfg, x, m.encode_text(tokens).detach(), positives, torch.Generator().manual_seed(0))
    assert float((adv - x).abs().max()) <= 4 / 255 + 1e-6
    m.train()
    loss, report, parts = TrainTask(m, cfg, Dist())(x, adv, tokens, None, positives)
    # the step's contrastive term is the family's own loss
    with torch.no_grad():
        own = m.contrastive_loss(m.encode_image(adv), m.encode_text(tokens), positives)
    if not m.has_itm:
        assert parts["itc"] == pytest.approx(float(own), rel=1e-4, abs=1e-5)
    if trainable:
        loss.backward()
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in trainable)
    assert bool(torch.isfinite(loss))


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_recomputation_keeps_the_gradients(name):
    from advlora.models.recompute import enable_recompute

    plain = attach_adapter(base(name), "lora", rank=2, towers="both")
    again = copy.deepcopy(plain)
    assert enable_recompute(again) == len(again.recompute_layers()) > 0
    x = _pixels(2)
    grads = []
    for m in (plain, again):
        x_ = x.clone().requires_grad_(True)
        m.contrastive_loss(m.encode_image(x_), m.encode_text(WORDS[:2])).backward()
        grads.append(x_.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and float(grads[0].abs().sum()) > 0


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_save_load_round_trip(name, tmp_path):
    m = base(name)
    save_model(m, tmp_path / "m")
    back = load_model(str(tmp_path / "m"))
    assert type(back) is type(m) and back.image_size == m.image_size and back.max_length == m.max_length
    assert torch.equal(back.mean, m.mean) and torch.equal(back.std, m.std)
    x = _pixels(2, side=m.image_size)
    with torch.no_grad():
        assert torch.allclose(back.encode_image(x), m.encode_image(x), atol=1e-5)
        assert torch.allclose(back.encode_text(WORDS[:3]), m.encode_text(WORDS[:3]), atol=1e-5)
        assert torch.allclose(back.logit_scale, m.logit_scale)
    assert torch.equal(back.tokenize(WORDS[:3])["input_ids"], m.tokenize(WORDS[:3])["input_ids"])


def test_siglip_loss_is_the_sigmoid_one_and_targets_skip_the_pooling_head():
    from advlora.losses import sigmoid_contrastive

    m = base("siglip")
    img, txt = m.encode_image(_pixels(3)), m.encode_text(WORDS[:3])
    want = sigmoid_contrastive(img, txt, m.logit_scale, m.logit_bias)
    assert float(m.contrastive_loss(img, txt)) == pytest.approx(float(want))
    logits = m.logit_scale * img @ txt.t() + m.logit_bias
    by_hand = -torch.nn.functional.logsigmoid((2 * torch.eye(3) - 1) * logits).sum() / 3
    assert float(want) == pytest.approx(float(by_hand), rel=1e-5)
    names = [n for n, mod in m.hf_model.named_modules() if isinstance(mod, torch.nn.Linear)]
    assert "vision_model.head.attention.out_proj" in names   # the MAP head's nn.MultiheadAttention
    a = attach_adapter(base("siglip"), "lora", rank=2, towers="vision")
    assert not any("head" in n for n in a.advlora_adapter.layers)


def test_siglip2_patchify_matches_the_processor(tmp_path):
    """The differentiable patchify equals Siglip2ImageProcessorPil's patches of the same (square) image."""
    from PIL import Image

    m = base("siglip2")
    save_model(m, tmp_path / "m")
    proc = __import__("transformers").Siglip2ImageProcessorPil.from_pretrained(tmp_path / "m")
    side = m.image_size
    arr = (torch.rand(side, side, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    feats = proc(Image.fromarray(arr.numpy()), return_tensors="pt")
    x = arr.permute(2, 0, 1)[None].float() / 255
    captured = {}
    vm = m.hf_model.vision_model
    hook = vm.register_forward_pre_hook(lambda mod, a, kw: captured.update(kw), with_kwargs=True)
    with torch.no_grad():
        mine = m.encode_image(x)
    hook.remove()
    assert torch.allclose(captured["pixel_values"], feats["pixel_values"].float(), atol=1e-5)
    assert captured["spatial_shapes"].tolist() == feats["spatial_shapes"].tolist()
    with torch.no_grad():
        ref = vm(pixel_values=feats["pixel_values"].float(), pixel_attention_mask=feats["pixel_attention_mask"],
                 spatial_shapes=feats["spatial_shapes"]).pooler_output
    assert torch.allclose(torch.nn.functional.normalize(ref, dim=-1), mine, atol=1e-5)


# ---- a new family is one declaration ------------------------------------------------------------------------
class ToyWrapper(CLIPWrapper):
    """A CLIP whose adapters sit on the MLPs and whose loss is the sigmoid one: nothing of it is in the package."""

    arch = "toy"
    default_targets = {"vision": ["mlp.fc1"], "text": ["mlp.fc1"]}

    def contrastive_loss(self, image_features, text_features, positives=None, scale=None):
        from advlora.losses import sigmoid_contrastive

        return sigmoid_contrastive(image_features, text_features, self.logit_scale if scale is None else scale,
                                   -2.0, positives)


TOY = Family("toy", ToyWrapper, model_type="toy-clip", model_class="CLIPModel",
             processor_class="CLIPImageProcessorPil", config=clip_config, tiny=False,
             sizes={"toy-small": dict(width=24, layers=1, heads=2, mlp=48, text_width=24, text_layers=1, proj=16,
                                      image_size=24, patch=8)})


@pytest.fixture
def toy():
    with registry.registered(TOY) as fam:
        yield fam
    assert "toy" not in FAMILIES and "toy-small" not in registry.SIZES


def test_a_new_family_is_one_declaration(toy, tmp_path):
    from advlora.training import load_run_config, train

    ann = write_data(tmp_path / "data", n=8)
    assert random_for_size("toy-small").arch == "toy"          # the bench builds the family of the size
    cfg = load_run_config(None, base=tiny_config(ann, model={"random": "toy:toy-small"},
                                                 adapter={"method": "lora", "rank": 2, "towers": "both"},
                                                 train={"steps": 2}))
    res = train(cfg, tmp_path / "run")
    assert res is not None
    meta = json.loads((tmp_path / "run" / "adapter" / "advlora.json").read_text())
    assert meta["arch"] == "toy" and all(".mlp.fc1" in n for n in meta["layers"])
    model = load_adapter(random_model("toy", "toy-small", seed=0), tmp_path / "run" / "adapter")
    out = evaluate_robust(model, load_dataset(str(ann)), ["pgd"], ThreatModel(eps="16/255", steps=3), sanity=False)
    r = out["attacks"]["pgd"]
    assert r.metrics["r_mean"] <= r.clean["r_mean"]
    # its loss is what training optimised
    x, t = _pixels(2), ["red apple", "dog face"]
    img, txt = model.encode_image(x), model.encode_text(t)
    assert float(model.contrastive_loss(img, txt)) != \
        pytest.approx(float(CLIPWrapper.contrastive_loss(model, img, txt)))


def test_bench_sizes_build_the_family_that_declares_them(toy):
    assert registry.family_of_size("siglip-base").name == "siglip"
    assert registry.family_of_size("blip-base").name == "blip" and registry.family_of_size("tiny").name == "clip"
    registry.add_sizes("toy", {"toy-wide": {**registry.SIZES["toy-small"], "width": 32}})
    assert registry.family_of_size("toy-wide").name == "toy" and random_for_size("toy-wide").arch == "toy"


def test_unknown_family_and_model_type_are_one_line(tmp_path):
    with pytest.raises(AdvloraError, match="unknown model family 'vit'"):
        random_model("vit", "test")
    m = base("clip")
    save_model(m, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(AdvloraError, match="model_type 'llama'; supported model types: blip, clip, siglip"):
        load_model(str(tmp_path / "m"))
    with pytest.raises(AdvloraError, match="not a local model folder"):
        load_model(str(tmp_path / "nothing-here"))
