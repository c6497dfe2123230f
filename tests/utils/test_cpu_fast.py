"""utils/cpu_fast.py: channel concatenation with channels_last gradients, packed bf16 conv kernels, the side table."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn as nn

from models.common import Conv
from models.yolo import DetectionModel
from utils.checkpoint import torch_safe_load
from utils.cpu_fast import (
    PackableConv,
    PackedConvAct,
    cat_channels,
    install_packed_convs,
    installed_kernel,
    max_pool,
    packable_convs,
    packed_kernel,
    packed_kernels_available,
    remove_packed_convs,
)
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
    kernel = installed_kernel(conv)
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
def test_copies_and_pickles_of_a_model_with_kernels_carry_none():
    conv = _fused_conv()
    install_packed_convs(conv)
    x = _channels_last(1, 8, 16, 16)
    reference = _run(conv, x)
    copied = copy.deepcopy(conv)
    assert installed_kernel(copied) is None and installed_kernel(conv) is not None
    with torch.no_grad():
        copied.conv.weight.zero_()
    assert torch.equal(_run(conv, x), reference)  # the original's packed weight is untouched
    restored = pickle.loads(pickle.dumps(conv))
    assert installed_kernel(restored) is None and "PackedConvAct" not in str(pickle.dumps(conv))
    assert install_packed_convs(restored) == 1
    _assert_bf16_close(_run(restored, x), reference)


@NEEDS_KERNEL
def test_policy_installs_kernels_on_fused_models_only_and_fp32_removes_them(tmp_path):
    model = DetectionModel("models/yolov5n.yaml", nc=3).eval()
    convs = [m for m in model.modules() if isinstance(m, Conv)]
    head_convs = list(model.model[-1].m)
    BF16.prepare_model(model)
    assert not any(installed_kernel(m) for m in convs + head_convs)  # BatchNorm: a training model
    model.fuse()
    assert install_packed_convs(model) == len(convs) + len(head_convs) == 57 + 3
    assert all(installed_kernel(m) for m in convs + head_convs)
    assert all(installed_kernel(m).attr == "none" for m in head_convs)  # no activation after the head
    PrecisionPolicy("cpu", None, False, "fp32").prepare_model(model)
    assert not any(installed_kernel(m) for m in convs + head_convs)
    BF16.prepare_model(model)
    assert all(installed_kernel(m) for m in convs + head_convs)


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
    head_kernels = {id(installed_kernel(conv)) for conv in fast.model[-1].m}
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


class _FakeKernel:
    """Stands in for PackedConvAct where oneDNN bf16 is missing: ``act(conv(x)) + 1`` under no_grad, counted."""

    calls: list[str] = []

    def __init__(self, conv: nn.Conv2d, attr: str, scalars: list) -> None:
        self.conv, self.attr, self.scalars = conv, attr, scalars

    def applies(self, x: torch.Tensor) -> bool:
        return not torch.is_grad_enabled()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _FakeKernel.calls.append(self.attr)
        out = nn.functional.conv2d(x, self.conv.weight, self.conv.bias, self.conv.stride, self.conv.padding,
                                   self.conv.dilation, self.conv.groups)
        return {"swish": nn.functional.silu, "none": lambda t: t}[self.attr](out) + 1


def _fused_model() -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel("models/yolov5n.yaml", nc=3).eval().fuse()


def test_modules_offer_their_packable_convolutions():
    model = DetectionModel("models/yolov5n.yaml", nc=3).eval()
    assert all(e.head for e in packable_convs(model))  # BatchNorm still in place: only the head's outputs
    model.fuse()
    offered = list(packable_convs(model))
    convs = [m for m in model.modules() if isinstance(m, Conv)]
    assert [e.owner for e in offered if not e.head] == convs and len(convs) == 57
    assert all(e.conv is e.owner.conv and e.act is e.owner.act for e in offered if not e.head)
    heads = [e for e in offered if e.head]
    assert [e.owner for e in heads] == list(model.model[-1].m) and all(e.conv is e.owner and e.act is None
                                                                      for e in heads)


def test_side_table_installs_runs_and_removes_kernels_without_touching_the_modules():
    model = _fused_model()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)[0]
    dicts = {id(m): set(m.__dict__) for m in model.modules()}
    _FakeKernel.calls = []
    assert install_packed_convs(model, kernel=_FakeKernel) == 57 + 3
    assert {id(m): set(m.__dict__) for m in model.modules()} == dicts  # nothing stored on the modules
    head = model.model[-1].m[0]
    assert installed_kernel(head).attr == "none" and installed_kernel(model.model[0]).attr == "swish"
    with torch.no_grad():
        assert packed_kernel(model.model[0], x) is installed_kernel(model.model[0])
        faked = model(x)[0]
    assert len(_FakeKernel.calls) == 60 and not torch.allclose(faked, plain)
    assert packed_kernel(model.model[0], x) is None  # autograd recording: the kernel declines, plain path
    assert remove_packed_convs(model) == 60 and installed_kernel(head) is None
    with torch.no_grad():
        assert torch.equal(model(x.detach())[0], plain)


def test_head_convolutions_are_packed_only_on_models_with_fused_layers():
    model = DetectionModel("models/yolov5n.yaml", nc=3).eval()  # unfused: its Conv layers offer nothing
    assert install_packed_convs(model, kernel=_FakeKernel) == 0
    assert all(installed_kernel(m) is None for m in model.modules())


def test_unfusable_activations_and_padding_modes_are_skipped():
    conv = _fused_conv(act=nn.GELU())
    other = _fused_conv()
    other.conv.padding_mode = "reflect"
    assert install_packed_convs(conv, kernel=_FakeKernel) == 0 and install_packed_convs(other, kernel=_FakeKernel) == 0


def test_kernels_die_with_their_modules():
    conv = _fused_conv()
    install_packed_convs(conv, kernel=_FakeKernel)
    import utils.cpu_fast as cpu_fast

    before = len(cpu_fast._KERNELS)
    del conv
    import gc

    gc.collect()
    assert len(cpu_fast._KERNELS) == before - 1


def test_a_saved_fused_model_with_kernels_installed_loads_with_the_safe_loader(tmp_path):
    model = _fused_model()
    assert install_packed_convs(model, kernel=_FakeKernel) == 60
    path = tmp_path / "fused.pt"
    torch.save({"model": model}, path)
    referenced = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert not [name for name in referenced if "cpu_fast" in name or "Kernel" in name]
    loaded = torch_safe_load(path)["model"]
    assert all(installed_kernel(m) is None for m in loaded.modules())
    remove_packed_convs(model)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])


def test_packable_conv_defaults():
    conv = nn.Conv2d(3, 4, 1)
    entry = PackableConv(conv, conv)
    assert entry.act is None and entry.head is False
