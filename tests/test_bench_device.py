"""The GPU path of ``advlora bench`` (``--device``), exercised on the CPU so that it cannot rot without a GPU."""
from __future__ import annotations

import torch

from advlora.bench.device import data_wait_share, format_device_bench, run_device_bench
from advlora.cli import main


def test_device_bench_runs_on_cpu_and_reports_every_figure():
    res = run_device_bench("cpu", sizes=("test",), batch=4, repeats=1, warmup=0)
    row = res["sizes"]["test"]
    assert res["peak_bf16_tflops"] > 0
    assert row["pgd10_images_per_s"] > 0 and row["step_s"] > 0 and row["step_gflop"] > 0
    assert 0 < row["mfu"] < 10          # a ratio of two measured rates, not a constant
    text = format_device_bench(res)
    assert "PGD-10 img/s" in text and "test" in text


def test_data_wait_share_counts_only_the_wait():
    import time

    class Slow:
        def __iter__(self):
            while True:
                time.sleep(0.02)
                yield None

    share = data_wait_share(Slow(), lambda batch: time.sleep(0.02), steps=5)
    assert 0.3 < share < 0.7


def test_cli_device_cuda_without_a_gpu_is_one_line(capsys, tmp_path):
    if torch.cuda.is_available():
        return
    assert main(["bench", "--device", "cuda", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device" in err[0]
