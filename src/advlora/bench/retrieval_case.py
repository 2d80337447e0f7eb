"""P6: chunked retrieval of a 5k x 25k problem against one matrix product of the same size."""
from __future__ import annotations

import statistics

import torch

from advlora.bench.timing import current_rss_bytes, median_time, peak_rss_bytes, reset_peak_rss
from advlora.metrics import retrieval_recall_features


def measure_retrieval(n_images: int = 5000, n_texts: int = 25000, dim: int = 512, repeats: int = 3,
                      warmup: int = 1, seed: int = 0) -> dict[str, float]:
    """Time of ``retrieval_recall_features`` (similarities + ranks, in blocks) / time of ``img @ txt.T``.

    Extra memory is the peak resident size of the retrieval above the resident size before it; run this in a
    fresh process (``run_isolated``), since the peak of a process never goes down.
    """
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(n_texts, dim, generator=g), dim=-1)
    txt2img = torch.arange(n_texts) * n_images // n_texts
    reset_peak_rss()
    base = current_rss_bytes()
    retrieval_recall_features(img, txt, txt2img)  # warm-up, and the memory peak of the retrieval alone
    extra = peak_rss_bytes() - base
    retrieval = lambda: retrieval_recall_features(img, txt, txt2img)  # noqa: E731
    product = lambda: img @ txt.t()  # noqa: E731
    for _ in range(warmup):
        retrieval(), product()
    # interleaved, so that a change of the machine's load hits both alike (one after the other, the ratio of
    # the same code moved between 1.02 and 1.23 over three bench runs); each takes about 1.5 s at 5k x 25k
    t_retrieval, t_matmul = [], []
    for _ in range(max(repeats, 5)):
        t_retrieval.append(median_time(retrieval, 1, 0))
        t_matmul.append(median_time(product, 1, 0))
    t_retrieval, t_matmul = statistics.median(t_retrieval), statistics.median(t_matmul)
    return {"retrieval_s": t_retrieval, "matmul_s": t_matmul, "p6_eval_time": t_retrieval / t_matmul,
            "p6_eval_extra_gib": extra / 2**30}
