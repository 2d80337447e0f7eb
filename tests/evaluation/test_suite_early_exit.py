"""The suite's early exit (``results.PROTOCOL``): against ``exhaustive=True`` on the embedded sets, identical
image-to-text metrics, and text-to-image exactly as the protocol defines it (rebuilt here from each member
run alone on every image); the suite's peak disk under a state folder; a randomized model flagged."""
from __future__ import annotations

import copy
import types

import pytest
import torch

from advlora.attacks import ThreatModel, registry
from advlora.attacks.registry import AttackSpec, SuiteMember
from advlora.data import load_dataset
from advlora.data.emoji import EMOJI_SETS, build_emoji
from advlora.evaluation import distributed, images
from advlora.evaluation import robust as R
from advlora.evaluation.images import CleanImages, Picked
from advlora.evaluation.results import KS
from advlora.evaluation.runners import ImageRun

#: the standard suite's members at a budget a unit test can afford
SMALL = AttackSpec("standard-tiny", "suite", None, uses=("norm", "eps", "seed"), label="standard-tiny",
                   checks=("bounds",),
                   members=(SuiteMember("apgd-ce", "apgd", objective="contrastive", changes={"steps": 4}),
                            SuiteMember("apgd-t", "apgd-t", changes={"steps": 3}, options={"targets": 2}),
                            SuiteMember("square", "square", objective="margin", options={"queries": 20})),
                   rand_members=(SuiteMember("apgd-ce", "apgd", objective="contrastive", changes={"steps": 3},
                                             eot=2),
                                 SuiteMember("apgd-dlr", "apgd-margin", changes={"steps": 3}, eot=2)))


@pytest.fixture(scope="module")
def small_suite():
    with registry.registered(SMALL):
        yield SMALL.name


@pytest.fixture(scope="module")
def emoji_build(tmp_path_factory):
    """A small build of the embedded emoji benchmark (its source and downstream parts, one test render)."""
    return build_emoji(tmp_path_factory.mktemp("emoji"), limit=30, image_size=32,
                       renders={"train": 1, "val": 1, "test": 1}, workers=1)


def _data(build, name: str, limit: int = 12):
    part = EMOJI_SETS[name]
    ds = load_dataset(str(build / (f"{part}-test.jsonl" if part else "test.jsonl")))
    return ds.limit(limit, 0)


def _protocol_reference(model, data, threat, spec):
    """The protocol rebuilt from each member attacking every image alone (each image until its rank reaches
    max(KS)): per image, members attack while its kept i2t rank is below max(KS); the kept image is the worst by
    (rank, loss), the earlier on ties."""
    ctx = R.context(model, data, None)
    rank, loss = ctx.clean_ranks[0].clone(), ctx.clean_loss.double().clone()
    pick = torch.full((len(data),), -1)
    sources = []
    gen = threat.generator()
    for m in spec.members:
        todo = rank < max(KS)
        adv = R.attack_images(ctx, registry.get(m.attack), threat.replace(**m.changes), R.EvalPlan(batch_size=5),
                              generator=gen, objective=m.objective or "contrastive", options={**m.options},
                              run=ImageRun(key=f"{spec.name}/{m.label}", done_rank=max(KS))).images
        res = R.measure(ctx, adv)
        r, l_ = res["ranks"][0], res["loss"].double()
        better = todo & ((r > rank) | ((r == rank) & (l_ > loss)))
        rank, loss = torch.where(better, r, rank), torch.where(better, l_, loss)
        pick[better] = len(sources)
        sources.append(adv)
    gallery = Picked([*sources, CleanImages(data.load_images_uint8(model.image_size))],
                     torch.where(pick < 0, len(sources), pick))
    return R.measure(ctx, gallery)


@pytest.mark.parametrize("name", ["emoji-source", "emoji-downstream"])
def test_early_exit_matches_exhaustive_on_i2t_and_the_protocol_on_t2i(tiny_clip, small_suite, emoji_build, name):
    data = _data(emoji_build, name)
    for eps in ("1/255", "2/255", "4/255"):
        th = ThreatModel(eps=eps)
        early = R.evaluate_robust(tiny_clip, data, [small_suite], th, batch_size=5, sanity=False)
        full = R.evaluate_robust(tiny_clip, data, [small_suite], th, batch_size=5, sanity=False, exhaustive=True)
        a, b = early["attacks"][small_suite], full["attacks"][small_suite]
        assert {k: v for k, v in a.metrics.items() if k.startswith("i2t")} == \
            {k: v for k, v in b.metrics.items() if k.startswith("i2t")}, eps
        k_max = max(KS)
        assert [min(r, k_max) for r in a.ranks["i2t"]] == [min(r, k_max) for r in b.ranks["i2t"]]
        ref = _protocol_reference(tiny_clip, data, th, SMALL)
        assert {k: v for k, v in a.metrics.items() if k.startswith("t2i")} == \
            {k: v for k, v in ref["metrics"].items() if k.startswith("t2i")}, eps
        assert a.ranks["t2i"] == ref["ranks"][1].tolist()
        attacked = [early["attacks"][f"{small_suite}/{m.label}"].attacked for m in SMALL.members]
        assert attacked == sorted(attacked, reverse=True) and attacked[0] <= len(data)
        assert "early-exit" in a.threat and early["suite_mode"] == "early-exit"
        assert "early exit" in early["protocol"]


def test_suite_peak_disk_is_at_most_two_image_copies(tiny_clip, small_suite, emoji_build, tmp_path,
                                                    monkeypatch):
    data = _data(emoji_build, "emoji-source", 10)
    out = tmp_path / "out"
    copy_bytes = len(data) * 3 * tiny_clip.image_size ** 2 * 4
    peak = [0]
    write = images.atomic_write_bytes

    def watched(path, payload):
        write(path, payload)
        peak[0] = max(peak[0], sum(f.stat().st_size for f in out.rglob("*") if f.is_file()))

    monkeypatch.setattr(images, "atomic_write_bytes", watched)
    for exhaustive in (False, True):
        peak[0] = 0
        with distributed.EvalSession(state=out):
            R.evaluate_robust(tiny_clip, data, [small_suite], ThreatModel(eps="2/255"), batch_size=4,
                              sanity=False, exhaustive=exhaustive)
        headers = 64 * 1024          # safetensors headers of the records and the suite's small state file
        assert 0 < peak[0] <= 2 * copy_bytes + headers, (exhaustive, peak[0], copy_bytes)


def _noisy(model, eps: float = 8 / 255):
    """``model`` with fresh uniform noise of ``eps`` added to its input at every call (a randomized defense)."""
    m = copy.deepcopy(model)
    plain = m.encode_image

    def encode_image(self, x, normalize=True):
        return plain((x + (2 * torch.rand_like(x) - 1) * eps).clamp(0, 1), normalize)

    m.encode_image = types.MethodType(encode_image, m)
    return m


def test_a_randomized_model_is_flagged_and_attacked_with_eot(tiny_clip, small_suite, emoji_build):
    data = _data(emoji_build, "emoji-source", 8)
    th = ThreatModel(eps="2/255")
    plain = R.evaluate_robust(tiny_clip, data, [small_suite], th, batch_size=4, sanity_limit=4)
    assert any(c.passed and "deterministic" in c.message for c in plain["sanity"])
    assert "rand" not in plain["attacks"][small_suite].threat
    noisy = R.evaluate_robust(_noisy(tiny_clip), data, [small_suite], th, batch_size=4, sanity_limit=4)
    flags = [c for c in noisy["sanity"] if "randomized model" in c.message]
    assert flags and flags[0].status == "WARN"
    line = noisy["attacks"][small_suite].threat
    assert "standard-tiny-rand" in line and "EOT=2" in line
    assert set(k for k in noisy["attacks"] if "/" in k) == {f"{small_suite}/apgd-ce", f"{small_suite}/apgd-dlr"}


@pytest.mark.parametrize("exhaustive", [False, True])
def test_sanity_checks_run_on_both_suite_modes(tiny_clip, small_suite, emoji_build, exhaustive):
    data = _data(emoji_build, "emoji-downstream", 8)
    out = R.evaluate_robust(tiny_clip, data, [small_suite], ThreatModel(eps="4/255"), batch_size=4, sanity_limit=4,
                            exhaustive=exhaustive)
    messages = [c.message for c in out["sanity"]]
    assert out["verdict"] and any("robust <= clean" in m and m.startswith(small_suite + ":") for m in messages)
    assert any(m.startswith(f"{small_suite}/square vs white-box") for m in messages)   # per-sample black vs white
    assert any("steps x2" in m for m in messages)                                      # the probe re-runs a member


@pytest.mark.parametrize("exhaustive", [False, True])
def test_a_stopped_suite_resumes_from_its_kept_images(tiny_clip, small_suite, emoji_build, tmp_path, exhaustive):
    import signal

    from advlora.preempt import StopRequest

    data = _data(emoji_build, "emoji-downstream", 8)
    th = ThreatModel(eps="4/255")
    kw = dict(batch_size=4, sanity=False, exhaustive=exhaustive)
    ref = R.evaluate_robust(tiny_clip, data, [small_suite], th, **kw)
    stop, calls = StopRequest(), []
    n_first = -(-len(data) // 4)          # the first member's batches (it attacks every image not done clean)

    class Stopper(distributed.EvalSession):      # a stop arrives in the second member
        def _check_stop(self):
            calls.append(1)
            if len(calls) == n_first + 1:
                stop.signum = signal.SIGTERM
            super()._check_stop()

    state = tmp_path / "state"
    with pytest.raises(distributed.EvalPreempted), Stopper(state=state, stop=stop, fingerprint={"a": 1}):
        R.evaluate_robust(tiny_clip, data, [small_suite], th, **kw)
    assert list(state.glob("*-kept/suite.json"))             # the first member was merged before the stop
    with distributed.EvalSession(state=state, resume=True, fingerprint={"a": 1}):
        again = R.evaluate_robust(tiny_clip, data, [small_suite], th, **kw)
    for key, entry in ref["attacks"].items():
        assert again["attacks"][key]["metrics"] == entry["metrics"], key
        assert again["attacks"][key]["ranks"] == entry["ranks"], key


def test_members_with_nothing_left_to_attack(tiny_clip, small_suite, emoji_build, monkeypatch):
    from advlora.evaluation import plan

    monkeypatch.setattr(plan, "check_exit_k", lambda k: 0)   # every image "done" at its clean rank: none attacked
    data = _data(emoji_build, "emoji-source", 6)
    out = R.evaluate_robust(tiny_clip, data, [small_suite], ThreatModel(eps="4/255"), batch_size=4, sanity=False)
    assert [out["attacks"][f"{small_suite}/{m.label}"].attacked for m in SMALL.members] == [0, 0, 0]
    assert out["attacks"][small_suite].metrics == out["clean"]
    assert out["attacks"][small_suite].chosen["clean"] == len(data)


@pytest.mark.parametrize("name", ["emoji-source", "emoji-downstream"])
def test_exit_rank_one_keeps_r1_exact_and_attacks_less(tiny_clip, small_suite, emoji_build, name):
    data = _data(emoji_build, name)
    th = ThreatModel(eps="2/255")
    one = R.evaluate_robust(tiny_clip, data, [small_suite], th, batch_size=5, sanity=False, exit_k=1)
    ten = R.evaluate_robust(tiny_clip, data, [small_suite], th, batch_size=5, sanity=False)
    full = R.evaluate_robust(tiny_clip, data, [small_suite], th, batch_size=5, sanity=False, exhaustive=True)
    a, b = one["attacks"][small_suite], full["attacks"][small_suite]
    assert a.metrics["i2t_r1"] == b.metrics["i2t_r1"]
    assert [min(r, 1) for r in a.ranks["i2t"]] == [min(r, 1) for r in b.ranks["i2t"]]
    assert a.metrics["i2t_r10"] >= b.metrics["i2t_r10"]         # beyond the exit rank: an upper bound
    assert one["suite_exit_k"] == 1 and ten["suite_exit_k"] == max(KS) and "suite_exit_k" not in full
    assert "done at i2t rank >= 1)" in a.threat
    attacked = lambda r: [r["attacks"][f"{small_suite}/{m.label}"].attacked for m in SMALL.members]  # noqa: E731
    assert sum(attacked(one)) <= sum(attacked(ten))


def test_a_bad_exit_rank_is_one_line(tiny_clip, small_suite, emoji_build, capsys):
    from advlora.cli import main
    from advlora.errors import AdvloraError

    data = _data(emoji_build, "emoji-source", 4)
    with pytest.raises(AdvloraError, match="exit_k must be an integer >= 1"):
        R.evaluate_robust(tiny_clip, data, [small_suite], ThreatModel(eps="2/255"), sanity=False, exit_k=0)
    part = EMOJI_SETS["emoji-source"]
    ann = emoji_build / (f"{part}-test.jsonl" if part else "test.jsonl")
    assert main(["eval", "--model", "no/such-model", "--data", str(ann), "--limit", "4", "--attacks", "pgd",
                 "--exit-k", "0", "--no-sanity"]) == 2
    assert "exit_k must be an integer >= 1" in capsys.readouterr().err
