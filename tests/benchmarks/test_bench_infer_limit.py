"""The inference-limit benchmark's building blocks (benchmarks/bench_infer_limit.py) on a tiny model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.module_support import import_file


@pytest.fixture(scope="module")
def bench():
    return import_file("benchmarks/bench_infer_limit.py", "bench_infer_limit")


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 1)).eval()


def test_model_gflops_is_twice_the_multiply_accumulates(bench):
    # conv1: 8*3*3*3 MACs per pixel at 16x16 (+ bias); conv2: 4*8 per pixel at 8x8. thop counts MACs.
    macs = 8 * 27 * 16 * 16 + 4 * 8 * 8 * 8
    assert bench.model_gflops(_tiny(), 16) == pytest.approx(2 * macs / 1e9, rel=0.05)


def test_profile_shares_sum_to_one_and_count_convolutions(bench):
    shares = bench.profile_shares(_tiny(), torch.rand(1, 3, 16, 16), runs=2)
    assert shares["conv_calls"] == 2
    assert sum(v for k, v in shares.items() if k != "conv_calls") == pytest.approx(1.0)
    assert shares["conv"] > 0 and shares["activation"] > 0


def test_gemm_roof_and_call_cost_are_positive(bench):
    assert bench.gemm_gflops(threads=1, size=128, repeats=2) > 0
    assert 0 < bench.tiny_conv_us(repeats=20) < 1e6
