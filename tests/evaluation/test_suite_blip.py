"""The suite on a model with a second stage (BLIP: ITC top k re-ranked by ITM), in both modes: no crash, and
under early exit image-to-text R@1..R@exit_k equal to the exhaustive suite's, with images done and worst points
kept by the two-stage rank the metrics report (``attacks.stopping.report_rank``)."""
from __future__ import annotations

import pytest
import torch
from train_utils import write_data

from advlora.attacks import ThreatModel, registry
from advlora.attacks._utils import WorstCase
from advlora.attacks.objectives import RankedObjective
from advlora.attacks.registry import AttackSpec, SuiteMember
from advlora.attacks.stopping import report_rank, stop_at_rank
from advlora.data import load_dataset
from advlora.evaluation import measure as M
from advlora.evaluation import robust as R
from advlora.evaluation.images import TensorImages

#: the standard suite's members (the re-rank member included) at a budget a unit test can afford
SMALL = AttackSpec("standard-blip-tiny", "suite", None, uses=("norm", "eps", "seed"), label="standard-blip-tiny",
                   checks=("bounds",),
                   members=(SuiteMember("apgd-ce", "apgd", objective="contrastive", changes={"steps": 3}),
                            SuiteMember("apgd-t", "apgd-t", changes={"steps": 2}, options={"targets": 2}),
                            SuiteMember("square", "square", objective="margin", options={"queries": 10}),
                            SuiteMember("apgd-rerank", "apgd", objective="rerank", changes={"steps": 2},
                                        needs_itm=True)))


@pytest.fixture(scope="module")
def small_suite():
    with registry.registered(SMALL):
        yield SMALL.name


@pytest.fixture(scope="module")
def blip_set(tmp_path_factory):
    """8 images with two captions each (one caption shared by two images: several positives per image)."""
    return load_dataset(str(write_data(tmp_path_factory.mktemp("blip_suite"), n=8)))


@pytest.mark.parametrize("exit_k", [None, 2])
def test_blip_suite_early_exit_equals_exhaustive_up_to_the_exit_rank(tiny_blip, blip_set, small_suite, exit_k):
    th = ThreatModel(eps="8/255")
    early = R.evaluate_robust(tiny_blip, blip_set, [small_suite], th, batch_size=3, sanity=False, exit_k=exit_k)
    full = R.evaluate_robust(tiny_blip, blip_set, [small_suite], th, batch_size=3, sanity=False, exhaustive=True)
    assert early["rerank_k"] and full["rerank_k"]                  # the two-stage scores are what is measured
    k_exit = early["suite_exit_k"]
    assert k_exit == (exit_k or 10)
    a, b = early["attacks"][small_suite], full["attacks"][small_suite]
    assert [min(r, k_exit) for r in a.ranks["i2t"]] == [min(r, k_exit) for r in b.ranks["i2t"]]
    for k in (1, 5, 10):
        if k <= k_exit:
            assert a.metrics[f"i2t_r{k}"] == b.metrics[f"i2t_r{k}"], k
        else:                                                      # above the exit rank: an upper bound
            assert a.metrics[f"i2t_r{k}"] >= b.metrics[f"i2t_r{k}"], k
    members = [f"{small_suite}/{m.label}" for m in SMALL.members]
    assert all(m in early["attacks"] and m in full["attacks"] for m in members)   # the re-rank member ran
    if exit_k == 2:   # the test can tell: images got done, so later members attacked fewer of them
        attacked = [early["attacks"][m].attacked for m in members]
        assert attacked[-1] < len(blip_set), attacked
    # every image's kept point is at least as bad as each member's alone (exhaustive), by the reported rank
    for m in members:
        assert all(x >= y for x, y in zip(b.ranks["i2t"], full["attacks"][m].ranks["i2t"])), m


class _Scripted:
    """A ranked objective whose own rank is always 0 and whose loss is the call number (a later point is
    "better" by the loss alone)."""

    def __init__(self) -> None:
        self.calls = 0
        self.queried: list[int] = []

    def fn(self, x):
        self.calls += 1
        self.queried.append(x.shape[0])
        loss = torch.full((x.shape[0],), float(self.calls)) + 0 * x.reshape(x.shape[0], -1)[:, 0]
        scores = torch.tensor([[1.0, 0.0]]).repeat(x.shape[0], 1)          # own rank: 0, always
        return loss, scores, torch.tensor([[True, False]]).repeat(x.shape[0], 1)

    def objective(self) -> RankedObjective:
        return RankedObjective(self.fn, restrict=lambda rows: self.fn)


def test_done_and_the_worst_point_follow_the_reported_rank():
    """The reported rank (not the objective's own) decides when an image is done and which point is kept."""
    script = _Scripted()
    reported = {1: torch.tensor([3, 0]), 2: torch.tensor([1, 5])}    # by call: image 0 done at call 1

    def rank_of(x, rows):
        return reported[min(script.calls, 2)][rows]

    obj = stop_at_rank(report_rank(script.objective(), rank_of), 3)
    worst = WorstCase(torch.zeros(2, 1))
    for call in (1, 2):
        x = torch.full((2, 1), float(call))
        loss = obj(x)
        worst.update(loss, x, obj.last_rank)
    assert script.queried == [2, 1]                                  # image 0 was done by the reported rank 3
    assert worst.rank.tolist() == [3, 5] and worst.x[:, 0].tolist() == [1.0, 2.0]
    assert obj.finished


def test_reported_rank_of_repeated_images_is_each_rows_own(tiny_blip, blip_set):
    """APGD-T's targets repeat an image in one batch: each row is ranked on its own, as measure_i2t ranks it."""
    ctx = R.context(tiny_blip, blip_set, 4)
    idx = torch.tensor([1, 3, 1, 3])
    x = ctx.images.rows(idx)
    x[2:] = (x[2:] + 0.2 * torch.rand_like(x[2:])).clamp(0, 1)
    got = M.reported_i2t_rank(ctx, x, idx)
    for rows in ([0, 1], [2, 3]):
        want = M.measure_i2t(ctx, TensorImages(x[rows]), idx[rows])["rank"]
        assert got[rows].tolist() == want.tolist()
