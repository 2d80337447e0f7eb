"""Image attacks: threat model, ball and range, exact worst case on a linear objective, FGSM == PGD-1,
objective increase, per-sample restarts, cost of PGD, Square without gradients, bad input."""
import pytest
import torch

from advlora.attacks import (
    ATTACKS,
    ThreatModel,
    apgd,
    attack_mode,
    fgsm,
    format_eps,
    parse_eps,
    pgd,
    run_attack,
    square,
)
from advlora.attacks import objectives as O
from advlora.attacks.apgd import checkpoints
from advlora.attacks.attack_objective import Function
from advlora.errors import AdvloraError

G = lambda s=0: torch.Generator().manual_seed(s)  # noqa: E731




def _images(shape=(4, 3, 16, 16), seed=0):
    return torch.rand(shape, generator=G(seed))


class Quad(torch.nn.Module):
    """A smooth non-linear per-sample objective with a known gradient, cheap enough for every test."""

    def __init__(self, shape, seed=1):
        super().__init__()
        g = G(seed)
        self.w = torch.randn(shape[1:], generator=g)
        self.c = torch.rand(shape[1:], generator=g)
        self.calls = {"forward": 0, "backward": 0}

    def forward(self, x):
        self.calls["forward"] += 1
        out = (x * self.w).flatten(1).sum(1) + 2.0 * ((x - self.c) ** 2).flatten(1).sum(1).sqrt()
        if out.requires_grad:
            out.register_hook(lambda g: self.calls.__setitem__("backward", self.calls["backward"] + 1) or g)
        return out


# ---- threat model ---------------------------------------------------------------------------------------
def test_parse_eps_and_describe():
    assert parse_eps("4/255") == pytest.approx(4 / 255)
    assert parse_eps(" 0.5 ") == 0.5 and parse_eps(0) == 0.0
    assert format_eps(4 / 255) == "4/255" and format_eps(0.5) == "0.5" and format_eps(0.5 / 255) == "0.5/255"
    t = ThreatModel(eps="4/255", steps=10)
    assert t.eps == pytest.approx(4 / 255) and t.step == pytest.approx(1 / 255)
    assert t.describe() == "linf eps=4/255 PGD steps=10 step=1/255 restarts=1 random-start"
    assert ThreatModel(norm="l2", eps=0.5, steps=5, random_start=False).describe().startswith("l2 eps=0.5 PGD steps=5")
    assert format_eps(1.0) == "255/255" and format_eps(1.0, "l2") == "1" and format_eps(3 / 255, "l2") == "3/255"
    assert ThreatModel(norm="l2", eps=3).describe().startswith("l2 eps=3 PGD")   # l2 radii read as decimals


@pytest.mark.parametrize("bad", ["4//255", "abc", "1/0", "", "nan", [1]])
def test_malformed_eps(bad):
    with pytest.raises(AdvloraError, match="eps"):
        ThreatModel(eps=bad)


def test_bad_threat_values():
    with pytest.raises(AdvloraError, match=">= 0"):
        ThreatModel(eps=-0.1)
    with pytest.raises(AdvloraError, match="steps"):
        ThreatModel(steps=0)
    with pytest.raises(AdvloraError, match="restarts"):
        ThreatModel(restarts=0)
    with pytest.raises(AdvloraError, match="valid: l2, linf"):
        ThreatModel(norm="l3")
    x = _images()
    with pytest.raises(AdvloraError, match="steps"):
        pgd(Quad(x.shape), x, ThreatModel(eps=0.1, steps=0))
    with pytest.raises(AdvloraError, match=">= 0"):
        pgd(Quad(x.shape), x, ThreatModel(eps=-1))
    with pytest.raises(AdvloraError, match=r"\[0, 1\]"):
        pgd(Quad(x.shape), x * 3 - 1, ThreatModel(eps=0.1))
    with pytest.raises(AdvloraError, match="valid: apgd, fgsm, pgd, square, transfer"):
        run_attack("pdg", Quad(x.shape), x, ThreatModel())
    with pytest.raises(AdvloraError, match="one loss per sample"):
        pgd(lambda z: z.sum(), x, ThreatModel(eps=0.1))


# ---- geometry ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,norm,eps", [(n, "linf", 8 / 255) for n in ("fgsm", "pgd", "apgd", "square")]
                         + [(n, "l2", 0.5) for n in ("fgsm", "pgd", "apgd", "square")])
def test_in_ball_and_range(name, norm, eps):
    x = _images()
    x[0] = 0.0
    x[1] = 1.0  # saturated images must stay in [0, 1]
    obj = Quad(x.shape)
    adv = run_attack(name, obj, x, ThreatModel(norm=norm, eps=eps, steps=5, restarts=2), generator=G(), queries=30)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    d = (adv - x).flatten(1)
    n = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (n <= eps + 1e-6).all()
    assert (n > 0).any()


def test_linear_objective_reaches_analytic_worst_case_exactly():
    x = _images((3, 3, 8, 8))
    x[0, 0, 0] = 0.999  # near the border: clipping must apply
    w = torch.randn(x.shape[1:], generator=G(3))
    obj = lambda z: (z * w).flatten(1).sum(1)  # noqa: E731
    eps = 8 / 255
    expected = (x + eps * w.sign()).clamp(0, 1)
    adv = pgd(obj, x, ThreatModel(eps=eps, steps=10, step_size=eps / 4))
    assert torch.equal(adv, expected)
    assert torch.allclose(adv, expected, atol=0)
    adv_apgd = apgd(obj, x, ThreatModel(eps=eps, steps=10, random_start=False))
    assert torch.allclose(adv_apgd, expected, atol=1e-6)


def test_fgsm_equals_pgd_one_step_without_random_start(tiny_clip):
    x = _images((4, 3, 32, 32))
    caps = ["red apple", "blue car", "a dog runs", "green tree", "small cat", "big house"]
    tf = tiny_clip.encode_text(caps).detach()
    pos = torch.zeros(4, 6, dtype=torch.bool)
    pos[torch.arange(4), torch.arange(4)] = True
    obj = O.contrastive(tiny_clip, tf, pos)
    a = fgsm(obj, x, ThreatModel(eps=4 / 255))
    b = pgd(obj, x, ThreatModel(eps=4 / 255, steps=1, step_size=4 / 255, random_start=False))
    assert torch.equal(a, b)
    assert not torch.equal(a, x)


@pytest.mark.parametrize("name,objective", [("fgsm", "contrastive"), ("pgd", "contrastive"),
                                            ("apgd", "contrastive"), ("square", "contrastive"),
                                            ("apgd", "margin"), ("pgd", "embedding")])
def test_every_attack_raises_its_objective(tiny_clip, name, objective):
    # (FGSM on the embedding distance cannot move: its gradient is zero at the clean image)
    torch.manual_seed(0)
    x = _images((3, 3, 32, 32), seed=5)
    caps = ["red apple", "blue car", "a dog runs", "green tree", "small cat", "big house"]
    tf = tiny_clip.encode_text(caps).detach()
    pos = torch.zeros(3, 6, dtype=torch.bool)
    pos[torch.arange(3), torch.arange(3)] = True
    with torch.no_grad():
        clean_f = tiny_clip.encode_image(x, normalize=False)
    obj = {"contrastive": lambda: O.contrastive(tiny_clip, tf, pos), "margin": lambda: O.margin(tiny_clip, tf, pos),
           "embedding": lambda: O.embedding(tiny_clip, clean_f)}[objective]()
    with attack_mode(tiny_clip):
        adv = run_attack(name, obj, x, ThreatModel(eps="8/255", steps=3), generator=G(), queries=12)
        with torch.no_grad():
            before, after = obj(x), obj(adv)
    assert (after >= before - 1e-6).all()
    assert after.mean() > before.mean() + 1e-4


def test_perturbations_are_per_sample_and_restarts_keep_the_per_sample_worst():
    x = _images((6, 3, 8, 8))
    obj = Quad(x.shape)
    one = pgd(obj, x, ThreatModel(eps=0.05, steps=2, restarts=1), generator=G(0))
    many = pgd(obj, x, ThreatModel(eps=0.05, steps=2, restarts=4), generator=G(0))
    with torch.no_grad():
        assert (obj(many) >= obj(one) - 1e-6).all()   # the first restart is the same run: never worse per sample
    d = many - x
    assert not torch.allclose(d[0], d[1])            # each sample its own perturbation


def test_pgd_cost_is_one_forward_backward_per_step():
    x = _images((2, 3, 8, 8))
    obj = Quad(x.shape)
    pgd(obj, x, ThreatModel(eps=0.05, steps=10, restarts=2))
    # 10 forward+backward per restart, plus one forward (no backward) to score the last iterate
    assert obj.calls == {"forward": 2 * 11, "backward": 2 * 10}


def test_apgd_cost_leaves_out_the_last_iterates_backward():
    x = _images((2, 3, 8, 8))
    obj = Quad(x.shape)
    apgd(obj, x, ThreatModel(eps=0.05, steps=10, restarts=2))
    # per restart: the start and 9 iterates forward+backward, the 10th iterate a forward alone
    assert obj.calls == {"forward": 2 * 11, "backward": 2 * 10}


def test_the_clean_outcome_of_an_objective_replaces_its_forward(tiny_clip):
    x = _images((3, 3, tiny_clip.image_size, tiny_clip.image_size))
    tf = tiny_clip.encode_text(["red apple", "dog face", "flag japan rocket", "house"]).detach()
    pos = torch.eye(3, 4, dtype=torch.bool)
    with torch.no_grad():
        feats = tiny_clip.encode_image(x)
    calls = []
    plain, known = O.contrastive(tiny_clip, tf, pos), O.contrastive(tiny_clip, tf, pos, clean_features=feats)
    for obj in (plain, known):
        counted = Function(lambda z, o=obj: calls.append(len(z)) or o(z), ranked=True,
                           clean_outcome=obj.clean_outcome)   # declared: reports a rank, its clean one given
        calls.clear()
        pgd(counted, x, ThreatModel(eps=0.02, steps=2), generator=G())
        assert len(calls) == (3 if obj is known else 4)        # 2 steps + the last iterate (+ the clean images)
    plain(x)
    assert torch.equal(known.clean_outcome[1], plain.last_rank)
    assert torch.allclose(known.clean_outcome[0], plain(x), atol=1e-5)


def test_apgd_t_targets_in_one_pass_equal_them_one_after_another(tiny_clip):
    from advlora.attacks.apgd_t import apgd_targeted
    from advlora.attacks.seeding import SampleGenerators

    x = _images((5, 3, tiny_clip.image_size, tiny_clip.image_size), seed=3)
    words = ["red", "apple", "dog", "face", "flag", "japan", "rocket", "house", "green", "heart", "blue", "car"]
    tf = tiny_clip.encode_text([" ".join(words[(i * 7 + j) % 12] for j in range(3)) for i in range(12)]).detach()
    pos = torch.zeros(5, 12, dtype=torch.bool)
    pos[torch.arange(5), torch.arange(5)] = True
    family = O.TargetedDLR(tiny_clip, tf, pos, x, n_targets=4)
    runs = [apgd_targeted(family, x, ThreatModel(eps="8/255", steps=6), targets=4, targets_per_pass=p,
                          generator=SampleGenerators(0, range(5), "apgd-t")) for p in (None, 1, 3)]
    # the same per-(sample, target) streams: identical images, whichever targets share a pass (tolerance 0)
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    assert not torch.equal(runs[0], x)


def test_square_draws_one_proposal_per_query(monkeypatch):
    import importlib

    square_module = importlib.import_module("advlora.attacks.square")   # the package's ``square`` is the function
    draws = []
    signs = square_module._signs
    monkeypatch.setattr(square_module, "_signs", lambda *a: draws.append(1) or signs(*a))
    x = _images((3, 3, 16, 16))
    square(Quad(x.shape), x, ThreatModel(eps=0.05), queries=40, generator=G())
    assert len(draws) == 1 + 40                          # the initial stripes, then one draw per query


def test_generator_makes_attacks_reproducible():
    x = _images((2, 3, 8, 8))
    obj = Quad(x.shape)
    for name in ("pgd", "apgd", "square"):
        a = run_attack(name, obj, x, ThreatModel(eps=0.05, steps=3), generator=G(7), queries=10)
        b = run_attack(name, obj, x, ThreatModel(eps=0.05, steps=3), generator=G(7), queries=10)
        assert torch.equal(a, b), name


def test_video_shaped_inputs():
    x = _images((2, 4, 3, 8, 8))  # (B, F, 3, H, W)
    obj = Quad(x.shape)
    for name in ("fgsm", "pgd", "apgd", "square"):
        adv = run_attack(name, obj, x, ThreatModel(eps=0.05, steps=3), generator=G(), queries=10)
        assert adv.shape == x.shape and (adv - x).abs().max() <= 0.05 + 1e-6


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("backward called")


def test_square_never_calls_backward():
    x = _images((3, 3, 16, 16))
    quad = Quad(x.shape)
    obj = lambda z: quad(_NoBackward.apply(z))  # noqa: E731
    with pytest.raises(RuntimeError, match="backward called"):
        pgd(obj, x, ThreatModel(eps=0.05, steps=1))
    quad.calls["forward"] = 0
    adv = square(obj, x, ThreatModel(eps=0.05), queries=50, generator=G())
    assert quad.calls["forward"] == 52  # initial stripes + 50 queries + the clean images
    assert (adv - x).abs().max() <= 0.05 + 1e-6
    with torch.no_grad():
        assert (quad(adv) > quad(x)).all()
    quad.calls["forward"] = 0
    adv = square(obj, x, ThreatModel(eps=0.5, norm="l2"), queries=50, generator=G())   # gradient-free in l2 too
    assert quad.calls["forward"] == 52
    assert (adv - x).reshape(3, -1).norm(dim=1).max() <= 0.5 + 1e-5


def test_apgd_checkpoints_follow_the_paper():
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


def test_attack_mode_sets_eval_and_restores(tiny_clip):
    tiny_clip.train()
    tiny_clip.hf_model.text_model.eval()   # mixed modes must come back exactly
    with attack_mode(tiny_clip):
        assert not any(m.training for m in tiny_clip.modules())
    assert tiny_clip.training and not tiny_clip.hf_model.text_model.training
    tiny_clip.eval()


def test_attacks_leave_parameter_grads_untouched(tiny_clip):
    x = _images((2, 3, 32, 32))
    obj = O.embedding(tiny_clip, tiny_clip.encode_image(x).detach(), normalize=True)
    pgd(obj, x, ThreatModel(eps=0.03, steps=2))
    assert all(p.grad is None for p in tiny_clip.parameters())


def test_registry():
    assert set(ATTACKS) == {"fgsm", "pgd", "apgd", "square", "transfer"}
