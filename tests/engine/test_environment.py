"""The run environment: seeds, the AMP check and the AutoBatch fit."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn as nn

from engine.environment import check_amp, check_train_batch_size, fit_batch_size, init_seeds
from tests.module_support import run_fresh_python


def tiny_model() -> nn.Module:
    """A CPU model with parameters: enough for the AMP check and AutoBatch, which only look at its device."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_init_seeds_makes_python_numpy_and_torch_repeatable():
    draws = []
    for _ in range(2):
        init_seeds(5)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]


def test_init_seeds_deterministic_mode_is_warn_only_where_cuda_exists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        init_seeds(1, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_init_seeds_on_a_cpu_only_machine_does_not_load_the_compiler_stack(tmp_path):
    code = ("import sys, torch; torch.cuda.is_available = lambda: False\n"
            "from engine.environment import init_seeds\n"
            "init_seeds(0, deterministic=True)\n"
            "print('torch._inductor' in sys.modules, torch.are_deterministic_algorithms_enabled(),"
            " torch.backends.cudnn.deterministic)")
    done = run_fresh_python(code, cwd=tmp_path)
    assert done.stdout.split() == ["False", "False", "True"], done.stderr


def test_check_amp_is_off_on_cpu():
    assert check_amp(tiny_model()) is False


def test_autobatch_uses_default_on_cpu_and_fits_memory_linearly():
    assert check_train_batch_size(tiny_model(), 64, default=16) == 16
    sizes = [1, 2, 4, 8, 16]
    memory = [0.4 + 0.3 * b for b in sizes]  # 0.3 GB per image + 0.4 GB fixed
    assert fit_batch_size(sizes, memory, free_gb=10.0, fraction=0.8) == 25  # int((8 - 0.4) / 0.3)
    assert fit_batch_size(sizes, [1.0] * 5, free_gb=10.0) == 16, "a flat fit is anomalous: default"
    assert fit_batch_size([1, 2], [0.1, None], free_gb=10.0) == 16
