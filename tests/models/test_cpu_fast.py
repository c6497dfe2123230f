"""models/cpu_fast.py: channel concatenation with channels_last gradients, packed bf16 conv kernels."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn as nn

from models.common import Conv
from models.cpu_fast import (
    KERNEL_ATTRIBUTE,
    PackedConvAct,
    cat_channels,
    install_packed_convs,
    max_pool,
    packed_kernels_available,
    remove_packed_convs,
)
from models.yolo import DetectionModel
from utils.precision import PrecisionPolicy
from utils.torch_utils import fuse_conv_and_bn

NEEDS_KERNEL = pytest.mark.skipif(not packed_kernels_available(),
                                  reason="no oneDNN pointwise conv in this torch build, or no oneDNN bf16 here")
BF16 = PrecisionPolicy("cpu", torch.bfloat16, True, "test")


def _channels_last(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).contiguous(memory_format=torch.channels_last)


def test_cat_channels_matches_cat_and_gives_channels_last_gradients():
    a = _channels_last(2, 3, 5, 6).requires_grad_()
    b = _channels_last(2, 5, 5, 6, seed=1).requires_grad_()
    out = cat_channels((a, b))
    assert torch.equal(out, torch.cat((a, b), 1)) and type(out.grad_fn).__name__ == "_ChannelsLastCatBackward"
    grad = _channels_last(2, 8, 5, 6, seed=2)
    out.backward(grad)
    assert torch.equal(a.grad, grad[:, :3]) and torch.equal(b.grad, grad[:, 3:])
    for g in (a.grad, b.grad):
        assert g.is_contiguous(memory_format=torch.channels_last) and not g.is_contiguous()


@pytest.mark.parametrize("case", ["nchw", "no_grad", "no_requires_grad"])
def test_cat_channels_is_plain_cat_elsewhere(case):
    make = (lambda *s: torch.randn(*s)) if case == "nchw" else _channels_last
    a, b = make(2, 3, 4, 4), make(2, 2, 4, 4)
    if case != "no_requires_grad":
        a.requires_grad_()
    with torch.set_grad_enabled(case != "no_grad"):
        out = cat_channels([a, b])
    assert torch.equal(out, torch.cat((a, b), 1))
    assert out.grad_fn is None or type(out.grad_fn).__name__ == "CatBackward0"


def _fused_conv(act: nn.Module | bool = True, c1: int = 8, c2: int = 16, k: int = 3, s: int = 1, g: int = 1) -> Conv:
    torch.manual_seed(0)
    conv = Conv(c1, c2, k, s, g=g, act=act).eval()
    conv.bn.running_mean.uniform_(-0.5, 0.5)
    conv.bn.running_var.uniform_(0.5, 2.0)
    conv.conv = fuse_conv_and_bn(conv.conv, conv.bn)
    delattr(conv, "bn")
    return conv.to(memory_format=torch.channels_last)


def _run(module: nn.Module, x: torch.Tensor, autocast: bool = True) -> torch.Tensor:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return module(x)


def _assert_bf16_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.shape == ref.shape
    scale = ref.float().abs().max().clamp(min=1.0)
    assert ((out.float() - ref.float()).abs().max() / scale).item() <= 2e-2


@NEEDS_KERNEL
@pytest.mark.parametrize("act", [True, nn.ReLU(), nn.LeakyReLU(0.1), nn.Hardswish(), False],
                         ids=["silu", "relu", "leaky", "hardswish", "identity"])
@pytest.mark.parametrize("shape", [(1, 8, 32, 32), (3, 8, 24, 40)])
def test_packed_kernel_matches_autocast_conv_and_activation(act, shape):
    conv = _fused_conv(act)
    x = _channels_last(*shape, seed=3)
    reference = _run(conv, x)
    assert install_packed_convs(conv) == 1
    out = _run(conv, x)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    _assert_bf16_close(out, reference)
    _assert_bf16_close(_run(conv, x.contiguous()), reference)  # NCHW input too


@NEEDS_KERNEL
@pytest.mark.parametrize("s, g", [(2, 1), (1, 8)], ids=["stride2", "depthwise"])
def test_packed_kernel_strides_and_groups(s, g):
    conv = _fused_conv(c1=8, c2=8, s=s, g=g)
    x = _channels_last(2, 8, 17, 21, seed=4)
    reference = _run(conv, x)
    install_packed_convs(conv)
    _assert_bf16_close(_run(conv, x), reference)


@NEEDS_KERNEL
def test_packed_kernel_is_used_only_for_bf16_autocast_inference(monkeypatch):
    conv = _fused_conv()
    install_packed_convs(conv)
    kernel = getattr(conv, KERNEL_ATTRIBUTE)
    calls = []
    original = PackedConvAct.__call__
    monkeypatch.setattr(PackedConvAct, "__call__", lambda self, x: calls.append(1) or original(self, x))
    x = _channels_last(1, 8, 16, 16)
    assert _run(conv, x, autocast=False).dtype == torch.float32 and not calls
    conv.conv.weight.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    assert out.requires_grad and not calls  # autograd recording: the plain path
    with torch.no_grad():
        assert kernel.applies(x) is False  # outside autocast
        _run(conv, x)
    assert calls == [1]


@NEEDS_KERNEL
def test_packed_kernel_repacks_after_a_weight_change():
    conv = _fused_conv(act=False)
    x = _channels_last(1, 8, 16, 16)
    install_packed_convs(conv)
    before = _run(conv, x)
    with torch.no_grad():
        conv.conv.weight.mul_(2.0)
        conv.conv.bias.zero_()
    after = _run(conv, x)
    remove_packed_convs(conv)
    _assert_bf16_close(after, _run(conv, x))
    assert not torch.allclose(after.float(), before.float(), atol=1e-1)


@NEEDS_KERNEL
def test_packed_kernels_are_skipped_when_tracing():
    conv = _fused_conv()
    install_packed_convs(conv)
    x = _channels_last(1, 8, 16, 16)
    with torch.no_grad():
        traced = torch.jit.trace(conv, x)
    assert "_convolution_pointwise" not in str(traced.graph)


@NEEDS_KERNEL
def test_models_with_kernels_deepcopy_and_pickle():
    conv = _fused_conv()
    install_packed_convs(conv)
    x = _channels_last(1, 8, 16, 16)
    reference = _run(conv, x)
    copied = copy.deepcopy(conv)
    assert getattr(copied, KERNEL_ATTRIBUTE).conv is copied.conv
    with torch.no_grad():
        copied.conv.weight.zero_()
    assert torch.equal(_run(conv, x), reference)  # the original's packed weight is untouched
    restored = pickle.loads(pickle.dumps(conv))
    _assert_bf16_close(_run(restored, x), reference)


@NEEDS_KERNEL
def test_policy_installs_kernels_on_fused_models_only_and_fp32_removes_them(tmp_path):
    model = DetectionModel("models/yolov5n.yaml", nc=3).eval()
    convs = [m for m in model.modules() if isinstance(m, Conv)]
    head_convs = list(model.model[-1].m)
    BF16.prepare_model(model)
    assert not any(KERNEL_ATTRIBUTE in m.__dict__ for m in convs + head_convs)  # BatchNorm: a training model
    model.fuse()
    assert install_packed_convs(model) == len(convs) + len(head_convs) == 57 + 3
    assert all(KERNEL_ATTRIBUTE in m.__dict__ for m in convs + head_convs)
    assert all(getattr(m, KERNEL_ATTRIBUTE).attr == "none" for m in head_convs)  # no activation after the head
    PrecisionPolicy("cpu", None, False, "fp32").prepare_model(model)
    assert not any(KERNEL_ATTRIBUTE in m.__dict__ for m in convs + head_convs)
    BF16.prepare_model(model)
    assert all(KERNEL_ATTRIBUTE in m.__dict__ for m in convs + head_convs)


@NEEDS_KERNEL
def test_fused_model_with_kernels_matches_autocast_model():
    torch.manual_seed(0)
    model = DetectionModel("models/yolov5n.yaml", nc=3).eval().fuse()
    x = _channels_last(2, 3, 64, 96, seed=5)
    plain = copy.deepcopy(model).to(memory_format=torch.channels_last)
    fast = BF16.prepare_model(copy.deepcopy(model))
    reference, out = _run(plain, x)[0], _run(fast, x)[0]
    assert out.dtype == torch.float32
    assert (out[..., :4] - reference[..., :4]).abs().max() <= 2.0  # px, bf16 rounding of random-weight logits
    assert (out[..., 4:] - reference[..., 4:]).abs().max() <= 2e-2


@NEEDS_KERNEL
def test_detect_head_runs_its_output_convolutions_through_the_packed_kernels(monkeypatch):
    torch.manual_seed(0)
    model = DetectionModel("models/yolov5n.yaml", nc=3).eval().fuse()
    x = _channels_last(1, 3, 64, 64, seed=2)
    plain = copy.deepcopy(model).to(memory_format=torch.channels_last)
    fast = BF16.prepare_model(copy.deepcopy(model))
    head_kernels = {id(getattr(conv, KERNEL_ATTRIBUTE)) for conv in fast.model[-1].m}
    called = []
    original = PackedConvAct.__call__

    def counting(self, x):
        called.append(id(self))
        return original(self, x)

    monkeypatch.setattr(PackedConvAct, "__call__", counting)
    reference, (out, raw) = _run(plain, x)[0], _run(fast, x)
    assert head_kernels <= set(called) and len(called) == 60
    assert [r.dtype for r in raw] == [torch.bfloat16] * 3 and out.dtype == torch.float32
    assert (out[..., 4:] - reference[..., 4:]).abs().max() <= 2e-2


@NEEDS_KERNEL
def test_packed_kernels_on_a_model_copied_inside_inference_mode():
    """Parameters created under inference_mode have no version counter; packing must still work."""
    conv = _fused_conv()
    x = _channels_last(1, 8, 16, 16)
    reference = _run(conv, x)
    with torch.inference_mode():
        copied = copy.deepcopy(conv)
        assert copied.conv.weight.is_inference()
    install_packed_convs(copied)
    _assert_bf16_close(_run(copied, x), reference)


@pytest.mark.parametrize("k", [2, 3, 5, 9, 13])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_separable_max_pool_equals_the_square_pool(k, dtype):
    pool = nn.MaxPool2d(k, 1, k // 2)
    x = torch.randn(2, 6, 11, 14).to(dtype)
    for layout in (x, x.contiguous(memory_format=torch.channels_last)):
        with torch.no_grad():
            out = max_pool(pool, layout)
        assert out.shape == pool(layout).shape and torch.equal(out, pool(layout))


def test_max_pool_keeps_the_square_pool_for_autograd_other_strides_and_tracing(monkeypatch):
    calls = []
    original = torch.nn.functional.max_pool2d

    def recording(x, kernel_size, *args, **kwargs):
        calls.append(kernel_size)
        return original(x, kernel_size, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "max_pool2d", recording)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        max_pool(nn.MaxPool2d(5, 1, 2), x)
    assert calls == [(1, 5), (5, 1)]
    calls.clear()
    max_pool(nn.MaxPool2d(5, 1, 2), x.requires_grad_())
    max_pool(nn.MaxPool2d(2, 2), x.detach())
    assert calls == [5, 2]
