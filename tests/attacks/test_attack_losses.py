"""The loss choice of the white-box attacks (``objectives.LOSSES``: cross-entropy, CW margin, DLR): the CW margin
maximised by PGD and APGD reaches its known optimum on a linear model, DLR is AutoAttack's, and training takes
the choice from its config and refuses it where the objective's attack has its own loss."""
from __future__ import annotations

import pytest
import torch

from advlora.attacks import ThreatModel, image_objectives
from advlora.attacks import objectives as O
from advlora.attacks.apgd import apgd
from advlora.attacks.pgd import pgd
from advlora.errors import AdvloraError


class LinearModel:
    """``encode_image(x) = x.flatten() @ W``, not normalised: every caption score is linear in the pixels, so
    the CW margin against one negative, ``(t_neg - t_pos) . W x``, has a closed-form optimum over the ball."""

    def __init__(self, d: int, dim: int = 4, seed: int = 0) -> None:
        self.W = torch.randn(d, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def encode_image(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return x.flatten(1) @ self.W


def _case(norm: str, eps: float):
    g = torch.Generator().manual_seed(3)
    x0 = 0.25 + 0.5 * torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)   # away from 0 and 1
    model = LinearModel(16)
    tf = torch.randn(2, 4, generator=g, dtype=torch.float64)
    pos = torch.tensor([[True, False]] * 3)
    v = (model.W @ (tf[1] - tf[0])).view(1, 1, 4, 4)                # the margin's gradient, the same everywhere
    if norm == "linf":
        best = x0 + eps * v.sign()                                   # each pixel to the edge of its box
    else:
        best = x0 + eps * v / v.norm()                               # along the gradient, to the sphere
    assert best.min() >= 0 and best.max() <= 1                       # the ball lies inside [0, 1]
    obj = O.margin(model, tf, pos)
    return obj, x0, obj(best)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_cw_pgd_reaches_the_margins_optimum(norm, eps):
    obj, x0, optimum = _case(norm, eps)
    adv = pgd(obj, x0, ThreatModel(eps=eps, step_size=eps, steps=50, norm=norm, random_start=True),
              generator=torch.Generator().manual_seed(0))
    assert torch.allclose(obj(adv), optimum, rtol=1e-6, atol=1e-9), (obj(adv), optimum)
    adv = apgd(obj, x0, ThreatModel(eps=eps, steps=100, norm=norm), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(obj(adv), optimum, rtol=1e-4, atol=1e-9), (obj(adv), optimum)
    assert (obj(x0) < optimum).all()


def test_dlr_is_autoattacks_on_one_caption_per_image():
    z = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 6, 2, 2])
    pos = torch.nn.functional.one_hot(y, 7).bool()
    srt = z.sort(dim=1, descending=True).values
    z_y = z[torch.arange(5), y]
    other = z.masked_fill(pos, float("-inf")).amax(dim=1)
    reference = -(z_y - other) / (srt[:, 0] - srt[:, 2] + 1e-12)    # AutoAttack's dlr_loss, negated to maximise
    assert torch.allclose(O.dlr_loss(z, pos), reference)
    assert torch.allclose(O.dlr_loss(3 * z + 2, pos), reference, atol=1e-6)   # shift- and scale-invariant


def test_dlr_collapses_an_images_own_captions():
    sim = torch.tensor([[0.9, 0.85, 0.5, 0.2, 0.1]])
    pos = torch.tensor([[True, True, False, False, False]])
    # the second positive is not a "third score": pi = [0.9, 0.5, 0.2]
    assert torch.allclose(O.dlr_loss(sim, pos), torch.tensor([(0.5 - 0.9) / (0.9 - 0.2)]))


def test_the_losses_are_declared_once_and_checked():
    assert set(O.LOSSES) == {"contrastive", "margin", "dlr"} and set(O.LOSSES) <= set(image_objectives.choices())
    with pytest.raises(AdvloraError, match="contrastive, dlr, margin"):
        O.check_loss("cw")


def test_training_takes_the_attack_loss_and_refuses_it_where_it_does_not_apply(tiny_clip):
    from advlora.training.config import AttackConfig, load_run_config
    from advlora.training.step import attack_batch

    cfg = load_run_config(None, ["--attack.attack_loss", "dlr", "--attack.norm", "l2", "--attack.eps", "0.5"])
    assert (cfg.attack.attack_loss, cfg.attack.threat.norm) == ("dlr", "l2")
    with pytest.raises(AdvloraError, match="attack_loss"):
        load_run_config(None, ["--attack.attack_loss", "cw"])
    with pytest.raises(AdvloraError, match="trades chooses its own attack loss"):
        load_run_config(None, ["--attack.attack_loss", "margin", "--train.objective", "trades"])

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, tiny_clip.image_size, tiny_clip.image_size, generator=g)
    text = tiny_clip.encode_text(["a", "b", "c"]).detach()
    pos = torch.eye(3, dtype=torch.bool)
    seen = {}
    for loss in ("contrastive", "margin", "dlr"):
        a = AttackConfig(attack_loss=loss, threat=cfg.attack.threat.replace(steps=3))
        adv = attack_batch(tiny_clip, a, x, text, pos, torch.Generator().manual_seed(0))
        assert (adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
        sim = tiny_clip.encode_image(adv).detach() @ text.t()
        seen[loss] = O.margin_loss(sim, pos)
    # each loss drives its own search: the adversarial images differ
    assert not torch.allclose(seen["contrastive"], seen["margin"]) and not torch.allclose(seen["margin"],
                                                                                            seen["dlr"])
