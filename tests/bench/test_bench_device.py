"""The GPU path of ``advlora bench`` (``--device``), exercised on the CPU so that it cannot rot without a GPU."""
from __future__ import annotations

import pytest
import torch

import advlora.bench.device as device
from advlora.bench.device import data_wait_share, format_device_bench, run_device_bench
from advlora.cli import main


def test_device_bench_runs_on_cpu_and_reports_every_figure():
    res = run_device_bench("cpu", sizes=("test",), batch=4, repeats=1, warmup=0)
    row = res["sizes"]["test"]
    assert res["peak_bf16_tflops"] > 0
    assert row["pgd10_images_per_s"] > 0 and row["step_s"] > 0 and row["step_gflop"] > 0
    # no bound on how fast this machine is: only that the utilisation is the ratio of the reported figures
    assert row["mfu"] == pytest.approx(row["step_gflop"] * 1e9 / row["step_s"] / (res["peak_bf16_tflops"] * 1e12))
    text = format_device_bench(res)
    assert "PGD-10 img/s" in text and "test" in text


def test_data_wait_share_counts_only_the_wait(monkeypatch):
    """On a fake clock: each batch takes 2 units to arrive and each step 3, so the wait is 2 / 5 of the time
    (exact: no dependence on how busy the machine is)."""
    clock = [0.0]
    monkeypatch.setattr(device.time, "perf_counter", lambda: clock[0])

    def tick(units):
        clock[0] += units

    class Slow:
        def __iter__(self):
            while True:
                tick(2.0)
                yield None

    assert data_wait_share(Slow(), lambda batch: tick(3.0), steps=5) == pytest.approx(0.4)


def test_cli_device_cuda_without_a_gpu_is_one_line(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: this checks the message for a machine without one")
    assert main(["bench", "--device", "cuda", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device" in err[0]
