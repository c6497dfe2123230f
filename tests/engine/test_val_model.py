"""Tests for engine.val_model: when validation borrows the caller's model and when it converts a copy."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from engine.val_model import borrowed_model, needs_copy
from utils.precision import PrecisionPolicy

FP32_NCHW = PrecisionPolicy("cpu", None, False, "test")
FP32_CHANNELS_LAST = PrecisionPolicy("cpu", None, True, "test")
CPU_BF16 = PrecisionPolicy("cpu", torch.bfloat16, True, "test")


def small_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)).train()


def test_needs_copy_only_when_something_would_be_converted():
    model = small_model()
    assert not needs_copy(model, torch.float32, None)
    assert not needs_copy(model, torch.float32, FP32_NCHW)
    assert needs_copy(model, torch.float16, FP32_NCHW)  # fp16 weights
    assert needs_copy(model, torch.float32, FP32_CHANNELS_LAST)  # 3x3 weights are NCHW
    assert needs_copy(model, torch.float32, CPU_BF16)  # packed kernels would be attached
    assert not needs_copy(model.to(memory_format=torch.channels_last), torch.float32, FP32_CHANNELS_LAST)


def test_borrowed_in_place_restores_every_modules_mode():
    model = small_model()
    model[1].eval()
    with borrowed_model(model, torch.float32, FP32_NCHW) as work:
        assert work is model and not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True, True, False, True]


def test_borrowed_copy_is_converted_and_leaves_the_caller_alone():
    model = small_model()
    weight = model[0].weight.detach().clone()
    with borrowed_model(model, torch.float64, FP32_CHANNELS_LAST) as work:
        assert work is not model and not work.training
        assert work[0].weight.dtype == torch.float64
        assert work[0].weight.is_contiguous(memory_format=torch.channels_last)
        x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
        expected = model.eval()(x.float()).double()
        model.train()
        torch.testing.assert_close(work(x), expected)
    assert model.training and model[0].weight.dtype == torch.float32 and model[0].weight.is_contiguous()
    assert torch.equal(model[0].weight, weight)


def test_borrowed_restores_modes_when_the_body_raises():
    model = small_model()
    with pytest.raises(KeyError), borrowed_model(model):
        raise KeyError("boom")
    assert all(m.training for m in model.modules())
