"""Text, joint (Co-Attack style) and transfer attacks; BLIP objectives; objective validation."""
import pytest
import torch

from advlora.attacks import TextSide, ThreatModel, co_attack, image_objectives, run_attack, text_attack, transfer
from advlora.attacks import objectives as O
from advlora.attacks.text import edit
from advlora.errors import AdvloraError

CAPS = ["red apple", "blue car", "a dog runs", "green tree", "small cat", "big house"]




def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_edits_are_single_character_operations():
    import random

    rng = random.Random(0)
    for op in ("swap", "insert", "delete", "substitute"):
        for _ in range(20):
            out = edit("a dog runs", op, rng)
            assert out != "a dog runs" and levenshtein(out, "a dog runs") <= 2  # a swap is two substitutions
            assert out.count(" ") == 2


def test_text_attack_raises_objective_within_budget(tiny_clip):
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    imf = tiny_clip.encode_image(x).detach()
    obj = O.text_contrastive(tiny_clip, imf, torch.tensor([0, 1, 2, 0, 1, 2]))
    adv = text_attack(obj, CAPS, budget=2, candidates=8, generator=torch.Generator().manual_seed(0))
    assert len(adv) == len(CAPS)
    assert all(levenshtein(a, c) <= 2 * 2 for a, c in zip(adv, CAPS))
    with torch.no_grad():
        before, after = obj(CAPS, torch.arange(6)), obj(adv, torch.arange(6))
    assert (after >= before - 1e-6).all() and after.mean() > before.mean()
    assert text_attack(obj, CAPS, budget=0) == CAPS
    with pytest.raises(AdvloraError, match="valid: delete, insert, substitute, swap"):
        text_attack(obj, CAPS, operations=("shuffle",))
    with pytest.raises(AdvloraError, match="budget"):
        text_attack(obj, CAPS, budget=-1)


def test_co_attack_perturbs_both_within_budget(tiny_clip):
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    owner = torch.tensor([0, 1, 2, 0, 1, 2])
    adv, caps = co_attack(tiny_clip, x, CAPS, owner, ThreatModel(eps=4 / 255, steps=2),
                          text=TextSide(budget=1, candidates=4),
                          generator=torch.Generator().manual_seed(0))
    assert adv.shape == x.shape and (adv - x).abs().max() <= 4 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert not torch.equal(adv, x) and caps != CAPS
    with torch.no_grad():  # the adversarial pair is further apart than the clean one
        clean = (tiny_clip.encode_image(x)[owner] * tiny_clip.encode_text(CAPS)).sum(-1)
        after = (tiny_clip.encode_image(adv)[owner] * tiny_clip.encode_text(caps)).sum(-1)
    assert after.mean() < clean.mean()


def test_transfer_crafts_on_the_surrogate_only(tiny_clip):
    from advlora.models.tiny import random_model

    surrogate = random_model("clip", "test", seed=1)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tf = surrogate.encode_text(CAPS).detach()
    pos = torch.zeros(2, 6, dtype=torch.bool)
    pos[0, 0] = pos[1, 1] = True
    calls = []
    obj = O.contrastive(surrogate, tf, pos)
    adv = transfer(lambda z: calls.append(1) or obj(z), x, ThreatModel(eps=4 / 255, steps=2))
    assert len(calls) == 3 and (adv - x).abs().max() <= 4 / 255 + 1e-6
    with pytest.raises(AdvloraError, match="valid: apgd, fgsm, pgd"):
        transfer(obj, x, ThreatModel(eps=0.1), base="square")
    same = run_attack("transfer", obj, x, ThreatModel(eps=4 / 255, steps=2, random_start=False))
    assert same.shape == x.shape


def test_blip_itm_and_rerank_objectives(tiny_blip):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    caps = CAPS[:4]
    tf = tiny_blip.encode_text(caps).detach()
    pos = torch.zeros(2, 4, dtype=torch.bool)
    pos[0, 0] = pos[0, 2] = pos[1, 1] = True
    for obj in (O.itm(tiny_blip, [[caps[0], caps[2]], caps[1]]), O.rerank(tiny_blip, x, tf, pos, caps, k=2),
                O.itc(tiny_blip, tf, pos)):
        out = obj(x)
        assert out.shape == (2,) and torch.isfinite(out).all()
        adv = run_attack("pgd", obj, x, ThreatModel(eps=8 / 255, steps=2), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert (obj(adv) >= obj(x) - 1e-5).all()


def test_objective_validation(tiny_clip):
    tf = tiny_clip.encode_text(CAPS[:3]).detach()
    with pytest.raises(AdvloraError, match="bool tensor"):
        O.contrastive(tiny_clip, tf, torch.zeros(2, 3))
    with pytest.raises(AdvloraError, match="at least one positive"):
        O.contrastive(tiny_clip, tf, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(AdvloraError, match="ITM head"):
        O.itm(tiny_clip, ["a"])
    valid = ", ".join(sorted(image_objectives.choices()))
    with pytest.raises(AdvloraError, match="unknown objective 'kl' \\(valid: " + valid):
        image_objectives.check_objective("kl")
