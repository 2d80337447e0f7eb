"""advlora.threads: torch threads from the cores other processes leave free."""
import os

import torch

from advlora.threads import auto_threads, busy_cores, cores, torch_threads


def test_auto_threads_leaves_busy_cores_alone():
    n = cores()
    assert auto_threads(busy=0.0) == n
    assert auto_threads(busy=float(n)) == 1          # never fewer than one
    assert auto_threads(busy=100.0) == 1
    if n >= 2:
        assert auto_threads(busy=1.2) == n - 1


def test_busy_cores_is_a_load_and_torch_threads_restores():
    busy = busy_cores(0.05)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6
    old = torch.get_num_threads()
    with torch_threads(1) as k:
        assert k == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == old
