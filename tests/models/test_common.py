"""Layer classes of models/common.py and models/experimental.py: shapes, identities and Conv+BN fusion."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from models.common import (
    C3,
    C3SPP,
    C3TR,
    SPP,
    SPPF,
    Bottleneck,
    BottleneckCSP,
    C3Ghost,
    C3x,
    Classify,
    Concat,
    Contract,
    Conv,
    CrossConv,
    DWConv,
    DWConvTranspose2d,
    Expand,
    Focus,
    GhostBottleneck,
    GhostConv,
    Proto,
    TransformerBlock,
    TransformerLayer,
    autopad,
)
from models.experimental import MixConv2d, Sum
from models.yolo import DetectionModel
from utils.torch_utils import fuse_conv_and_bn

X = torch.rand(2, 8, 16, 16)


def _randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters so fusion is really exercised."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


@pytest.mark.parametrize("layer, out_shape", [
    (Conv(8, 16, 3, 2), (2, 16, 8, 8)),
    (Conv(8, 16, (1, 3), 1), (2, 16, 16, 16)),
    (Conv(8, 16, 3, 1, d=2), (2, 16, 16, 16)),
    (DWConv(8, 16, 3, 2), (2, 16, 8, 8)),
    (DWConvTranspose2d(8, 8, 2, 2), (2, 8, 32, 32)),
    (Bottleneck(8, 8), (2, 8, 16, 16)),
    (Bottleneck(8, 12, shortcut=True), (2, 12, 16, 16)),
    (BottleneckCSP(8, 16, n=2), (2, 16, 16, 16)),
    (CrossConv(8, 8, 3, 1), (2, 8, 16, 16)),
    (C3(8, 16, n=2), (2, 16, 16, 16)),
    (C3x(8, 16, n=2), (2, 16, 16, 16)),
    (C3TR(8, 16, n=1), (2, 16, 16, 16)),
    (C3SPP(8, 16), (2, 16, 16, 16)),
    (C3Ghost(8, 16, n=2), (2, 16, 16, 16)),
    (SPP(8, 16), (2, 16, 16, 16)),
    (SPPF(8, 16), (2, 16, 16, 16)),
    (Focus(8, 16, 3), (2, 16, 8, 8)),
    (GhostConv(8, 16, 3, 2), (2, 16, 8, 8)),
    (GhostBottleneck(8, 8, 3, 1), (2, 8, 16, 16)),
    (GhostBottleneck(8, 16, 3, 2), (2, 16, 8, 8)),
    (Contract(2), (2, 32, 8, 8)),
    (Expand(2), (2, 2, 32, 32)),
    (Proto(8, 16, 4), (2, 4, 32, 32)),
    (Classify(8, 5), (2, 5)),
    (MixConv2d(8, 8, (1, 3)), (2, 8, 16, 16)),
    (TransformerBlock(8, 16, 4, 2), (2, 16, 16, 16)),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_layer_output_shapes(layer, out_shape):
    assert layer.eval()(X).shape == out_shape


def test_multi_input_layers():
    a, b = torch.rand(1, 4, 8, 8), torch.rand(1, 6, 8, 8)
    assert Concat(1)([a, b]).shape == (1, 10, 8, 8)
    assert torch.equal(Sum(2)([a, a]), 2 * a)
    weighted = Sum(3, weight=True)
    expected = a + a * torch.sigmoid(weighted.w[0]) * 2 + a * torch.sigmoid(weighted.w[1]) * 2
    assert torch.allclose(weighted([a, a, a]), expected)
    assert Classify(10, 3).eval()([a, b]).shape == (1, 3)
    layer = TransformerLayer(8, 2)
    assert layer(torch.rand(5, 2, 8)).shape == (5, 2, 8)


def test_autopad_same_padding():
    assert autopad(3) == 1 and autopad(6) == 3 and autopad(5, 0) == 0
    assert autopad((1, 3)) == [0, 1] and autopad(3, d=2) == 2


def test_conv_structure_and_default_act():
    conv = Conv(3, 8, 6, 2, 2)
    assert conv.conv.bias is None and conv.conv.padding == (2, 2) and isinstance(conv.act, nn.SiLU)
    assert isinstance(Conv(3, 8, act=False).act, nn.Identity)
    assert isinstance(Conv(3, 8, act=nn.ReLU()).act, nn.ReLU)
    assert DWConv(8, 16, 3).conv.groups == 8


def test_focus_is_space_to_depth_then_conv():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    focus = Focus(1, 4, act=False).eval()
    nn.init.eye_(focus.conv.conv.weight.view(4, 4))
    focus.conv.bn.eval()
    with torch.no_grad():
        focus.conv.bn.weight.fill_(1.0)
        focus.conv.bn.bias.zero_()
        focus.conv.bn.eps = 0.0
        y = focus(x)
    assert y[0, :, 0, 0].tolist() == [0.0, 4.0, 1.0, 5.0]  # phases (0,0), (1,0), (0,1), (1,1)
    assert y.shape == (1, 4, 2, 2)


def test_contract_expand_are_inverse():
    x = torch.rand(2, 8, 12, 16)
    contracted = Contract(2)(x)
    assert contracted.shape == (2, 32, 6, 8)
    assert torch.equal(Expand(2)(contracted), x)
    y = torch.rand(1, 36, 4, 4)
    assert torch.equal(Contract(3)(Expand(3)(y)), y)


def test_sppf_equals_spp_5_9_13():
    torch.manual_seed(0)
    sppf, spp = SPPF(8, 16, 5).eval(), SPP(8, 16, (5, 9, 13)).eval()
    spp.load_state_dict(sppf.state_dict())
    assert torch.allclose(sppf(X), spp(X), atol=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_sppf_fast_cpu_pooling_is_exact_and_keeps_nchw():
    torch.manual_seed(0)
    sppf = SPPF(8, 16, 5).eval()
    with torch.no_grad():
        x = sppf.cv1(X)
        pooled = [x]
        for _ in range(3):
            pooled.append(nn.functional.max_pool2d(pooled[-1], 5, 1, 2))
        expected = sppf.cv2(torch.cat(pooled, 1))
        out = sppf(X)
    assert torch.equal(out, expected) and out.is_contiguous()
    with torch.no_grad():
        assert torch.equal(torch.jit.trace(sppf, X)(X), expected)


def test_ghost_layers_structure():
    ghost = GhostConv(8, 16, 1, 1)
    assert ghost.cv1.conv.out_channels == 8 and ghost.cv2.conv.groups == 8 and ghost.cv2.conv.kernel_size == (5, 5)
    strided = GhostBottleneck(8, 16, 3, 2)
    assert isinstance(strided.conv[1], DWConv) and isinstance(strided.shortcut, nn.Sequential)
    assert isinstance(GhostBottleneck(16, 16).shortcut, nn.Identity)


def test_c3tr_uses_transformer_block():
    layer = C3TR(16, 32, n=2)
    assert isinstance(layer.m, TransformerBlock) and len(layer.m.tr) == 2 and layer.m.conv is None
    assert layer.m.tr[0].ma.num_heads == 4
    assert layer(torch.rand(1, 16, 4, 4)).shape == (1, 32, 4, 4)


def test_bottleneck_residual_only_when_shapes_match():
    assert Bottleneck(8, 8).add and not Bottleneck(8, 8, shortcut=False).add and not Bottleneck(8, 16).add


@pytest.mark.parametrize("groups", [1, 4])
def test_fuse_conv_and_bn_matches_eval_output(groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, 2, 1, groups=groups, bias=groups == 4)
    bn = nn.BatchNorm2d(16).eval()
    _randomize_batchnorm(bn)
    fused = fuse_conv_and_bn(conv, bn)
    assert fused.bias is not None and not fused.weight.requires_grad
    assert torch.allclose(fused(X), bn(conv(X)), atol=1e-5)


def test_model_fuse_matches_unfused_eval_output():
    torch.manual_seed(0)
    model = DetectionModel("yolov5n.yaml", nc=4).eval()
    _randomize_batchnorm(model)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)[0]
        model.fuse()
        after = model(x)[0]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(list(model.modules())) == 157  # upstream's fused layer count for yolov5n
    detect_params_nc80, detect_params_nc4 = (64 + 128 + 256) * 255 + 3 * 255, (64 + 128 + 256) * 27 + 3 * 27
    assert sum(p.numel() for p in model.parameters()) == 1_867_405 - detect_params_nc80 + detect_params_nc4
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)


def test_fuse_conv_and_bn_accepts_channels_last_weights():
    torch.manual_seed(0)
    conv = Conv(8, 16, 3).eval().to(memory_format=torch.channels_last)
    conv.bn.running_mean.uniform_(-0.5, 0.5)
    x = torch.rand(1, 8, 12, 12)
    reference = conv.bn(conv.conv(x))
    fused = fuse_conv_and_bn(conv.conv, conv.bn)
    assert fused.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fused(x), reference, atol=1e-5)
