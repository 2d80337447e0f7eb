"""``advlora bench --methods``: a row for every declared method (a throw-away one included, with no bench change),
written to bench.json under "methods"; its options are checked before any work (a smoke test, not a benchmark).

The rows' test stands in for the fresh processes of the memory figure (each one costs an import of torch and
peft): it records what each would run and answers a peak per method; one real fresh process then shows that the
throw-away method, declared here only, is measured there too."""
import json

import pytest
import torch

from advlora.adapters import method as adapter_methods
from advlora.bench import cases, methods_case
from advlora.bench.timing import run_isolated
from advlora.cli import main


class ScaledLinear(torch.nn.Module):
    """``base(x) * scale``: one trainable scale per output of a frozen Linear."""

    def __init__(self, base: torch.nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.scale = torch.nn.Parameter(torch.ones(base.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * self.scale


class BenchScale(adapter_methods.AdapterMethod):
    """A throw-away method declared in this file alone (the bench's fresh processes get it from the parent)."""

    name = "benchscale"
    summary = "a trainable scale per output of each target layer (the bench test's throw-away method)"
    reads = ("towers", "targets")
    cost_note = "the throw-away's declared cost note"

    def attach(self, model, cfg, state, names, saved=None) -> None:
        for n in names:
            parent, _, child = n.rpartition(".")
            owner = model.hf_model.get_submodule(parent)
            setattr(owner, child, ScaledLinear(getattr(owner, child)))


def test_methods_bench_has_a_row_for_every_declared_method(tmp_path, capsys, monkeypatch):
    calls = []

    def fresh_process(fn, *args):
        assert fn is cases.peak_memory_of_training
        calls.append(args)
        return float(2**30 * len(calls))                 # 1 GiB, 2 GiB, ... in the order of the calls

    monkeypatch.setattr(methods_case, "run_isolated", fresh_process)
    out = tmp_path / "bench"
    with adapter_methods.registered(BenchScale()):
        expected = list(adapter_methods.choices())
        assert main(["bench", "--methods", "--random-model", "clip:test", "--batch-size", "2", "--repeats", "1",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads((out / "bench.json").read_text())["methods"]["rows"]
    by = {r["method"]: r for r in rows}
    assert [r["method"] for r in rows] == expected
    assert {"frozen", "full", "lora", "advlora", "dora", "vera", "ia3", "pissa", "benchscale"} <= set(by)
    assert by["pissa"]["declared"] == "lora" and by["pissa"]["options"] == {"init": "pissa"}
    assert by["frozen"]["trainable"] == 0 and by["frozen"]["step_s"] is None and by["frozen"]["note"]
    assert by["full"]["trainable"] > by["lora"]["trainable"] > 0
    assert by["benchscale"]["trainable"] == 512           # 16 target layers x 32 outputs of the test CLIP
    assert by["lora"]["step_vs_lora"] == 1.0 and by["full"]["peak_vs_full"] == 1.0
    # one fresh process per method that trains, each told its method, options and declaration
    trained = [n for n in expected if n != "frozen"]
    assert [(a[1], a[7], a[8].name) for a in calls] == [(by[n]["declared"], by[n]["options"], by[n]["declared"])
                                                        for n in trained]
    assert [by[n]["peak_gib"] for n in trained] == [float(i) for i in range(1, len(trained) + 1)]
    assert by["lora"]["peak_vs_full"] == by["lora"]["peak_gib"] / by["full"]["peak_gib"]
    for name, r in by.items():
        if name == "frozen":
            continue
        assert r["step_s"] > 0 and r["peak_gib"] > 0 and r["peak_vs_full"] > 0, name
        # a note is the declaration's, and only on a step over 1.5x LoRA's
        assert bool(r["note"]) == (r["step_vs_lora"] > 1.5), name
        if r["note"] and name in ("dora", "benchscale"):
            assert r["note"] == adapter_methods.resolve(name)[0].cost_note
    lines = printed.splitlines()
    assert lines[1].split()[:7] == ["method", "trainable", "step", "s", "step/LoRA", "peak", "GiB"]
    for name in expected:
        assert any(line.split()[0] == name for line in lines[2:]), name
    assert "pissa (lora, init=pissa)" in printed and f"{out}/bench.json" in printed


def test_methods_bench_checks_options_before_any_work(tmp_path, capsys):
    assert main(["bench", "--methods", "--random-model", "clip:test", "--repeats", "0",
                 "--out", str(tmp_path / "b")]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err
    assert main(["bench", "--methods", "--data", "--out", str(tmp_path / "b")]) == 2
    assert "--data and --methods: choose one bench mode" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["bench", "--methods", "--random-model", "clip:test", "--out", str(tmp_path / "mine")]) == 2
    assert "mine" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_method_declared_only_here_is_measured_in_a_fresh_process():
    with adapter_methods.registered(BenchScale()):
        peak = run_isolated(cases.peak_memory_of_training, "test", "benchscale", 8, 2, 1, False, True, {},
                            BenchScale())
    assert peak > 0


@pytest.mark.parametrize("classes", [0, 5], ids=["captions", "class-prompts"])
@pytest.mark.parametrize("method", ["coop", "maple", "lora"])
def test_the_timed_step_trains_every_parameter_on_captions_and_on_class_prompts(method, classes):
    """The step ``bench --methods`` times is a real training step for every method: a gradient reaches each
    trainable parameter (LoRA's A: zero at the start, B being zero), a learned text prompt's too (its class
    prompts re-encoded with gradient on a classification batch, its captions on a retrieval one); on class
    prompts, as the trainer, a weight method's text side stays fixed."""
    model = cases.adapted(cases.base_model("test"), method, 4)
    images, captions = cases.make_batch(model, 4)
    got: set[str] = set()
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda p, name=name: got.add(name))   # a gradient reached it
    cases.train_step_fn(model, images, captions, classes=classes)()
    want = {n for n, p in model.named_parameters() if p.requires_grad}
    if classes and not adapter_methods.get(method).learns_class_text:    # TeCoA: the class embeddings fixed
        want = {n for n in want if model.tower_of(n.removeprefix("hf_model.").split(".base_model.model.")[-1])
                == "vision"}
    assert got == want and got
