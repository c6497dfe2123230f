"""Layer classes of YOLOv5 models (pickle surface).

Upstream checkpoints pickle these classes by qualified name (``models.common.Conv`` ...) and restore their
instance ``__dict__`` without calling ``__init__``, so class names and attribute names here are frozen.

Glossary of the terse constructor arguments kept for YAML compatibility: ``c1`` input channels, ``c2`` output
channels, ``k`` kernel size, ``s`` stride, ``p`` padding (None = same), ``g`` groups, ``d`` dilation, ``e`` hidden
channel expansion ratio, ``n`` repeats, ``act`` activation (True = ``Conv.default_act``, a module, or False).
Attribute names: ``cv1..cv4`` sub-convolutions, ``m`` repeated/inner modules, ``bn`` batch norm, ``add`` residual.

Non-pickled inference wrappers (DetectMultiBackend, AutoShape, Detections) live in their own modules.
"""

from __future__ import annotations

import importlib
import math
import warnings
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from models.registry import add_module
from utils.checkpoint import allow_module_classes
from utils.cpu_fast import PackableConv, cat_channels, max_pool, packed_kernel
from utils.torch_utils import is_tracing

IntOrPair = Union[int, Sequence[int]]


def autopad(k: IntOrPair, p: Optional[IntOrPair] = None, d: int = 1) -> IntOrPair:
    """Return the 'same' padding for kernel ``k`` and dilation ``d`` when ``p`` is None."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation. After ``fuse()`` the ``bn`` attribute is gone."""

    default_act = nn.SiLU()

    def __init__(self, c1: int, c2: int, k: IntOrPair = 1, s: IntOrPair = 1, p: Optional[IntOrPair] = None,
                 g: int = 1, d: int = 1, act: Union[bool, nn.Module] = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``act(bn(conv(x)))``, or ``act(conv(x))`` once fused (a packed kernel under CPU bf16 inference)."""
        if "bn" in self._modules:
            return self.act(self.bn(self.conv(x)))
        kernel = packed_kernel(self, x)  # CPU bf16 inference (utils/cpu_fast.py)
        return kernel(x) if kernel is not None else self.act(self.conv(x))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        """Forward without batch norm (after Conv+BN fusion)."""
        return self.act(self.conv(x))

    def packable_convs(self) -> list[PackableConv]:
        """The convolution + activation the CPU fast path may run as one packed kernel: only once fused."""
        if "bn" in self._modules or not isinstance(self._modules.get("conv"), nn.Conv2d):
            return []
        return [PackableConv(self, self.conv, self.act)]


class DWConv(Conv):
    """Depth-wise convolution: a Conv with ``groups = gcd(c1, c2)``."""

    def __init__(self, c1: int, c2: int, k: IntOrPair = 1, s: IntOrPair = 1, d: int = 1,
                 act: Union[bool, nn.Module] = True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class DWConvTranspose2d(nn.ConvTranspose2d):
    """Depth-wise transposed convolution."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p1: int = 0, p2: int = 0):
        super().__init__(c1, c2, k, s, p1, p2, groups=math.gcd(c1, c2))


class TransformerLayer(nn.Module):
    """Multi-head self-attention + two-layer linear block, both residual (no LayerNorm, as upstream)."""

    def __init__(self, c: int, num_heads: int):
        super().__init__()
        self.q = nn.Linear(c, c, bias=False)
        self.k = nn.Linear(c, c, bias=False)
        self.v = nn.Linear(c, c, bias=False)
        self.ma = nn.MultiheadAttention(embed_dim=c, num_heads=num_heads)
        self.fc1 = nn.Linear(c, c, bias=False)
        self.fc2 = nn.Linear(c, c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the attention and feed-forward residual updates of tokens x (seq, batch, c)."""
        x = self.ma(self.q(x), self.k(x), self.v(x))[0] + x
        return self.fc2(self.fc1(x)) + x


class TransformerBlock(nn.Module):
    """Optional 1x1 Conv to ``c2``, learned position embedding (Linear) and ``num_layers`` TransformerLayers."""

    def __init__(self, c1: int, c2: int, num_heads: int, num_layers: int):
        super().__init__()
        self.conv = None if c1 == c2 else Conv(c1, c2)
        self.linear = nn.Linear(c2, c2)
        self.tr = nn.Sequential(*(TransformerLayer(c2, num_heads) for _ in range(num_layers)))
        self.c2 = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (b, c2, h, w) map after the optional projection and the transformer layers over its pixels."""
        if self.conv is not None:
            x = self.conv(x)
        b, _, h, w = x.shape
        tokens = x.flatten(2).permute(2, 0, 1)  # (h*w, b, c)
        return self.tr(tokens + self.linear(tokens)).permute(1, 2, 0).reshape(b, self.c2, h, w)


class Bottleneck(nn.Module):
    """1x1 Conv -> 3x3 Conv with an optional residual when ``shortcut`` and ``c1 == c2``."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``cv2(cv1(x))``, plus ``x`` when the residual applies."""
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class BottleneckCSP(nn.Module):
    """Cross-stage-partial bottleneck stack (the YOLOv4/v5-v3.x block)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1)
        self.bn = nn.BatchNorm2d(2 * c_)
        self.act = nn.SiLU()
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the CSP output (b, c2, h, w)."""
        y1 = self.cv3(self.m(self.cv1(x)))
        y2 = self.cv2(x)
        return self.cv4(self.act(self.bn(cat_channels((y1, y2)))))


class CrossConv(nn.Module):
    """(1 x k) Conv followed by (k x 1) Conv with an optional residual."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, e: float = 1.0, shortcut: bool = False):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, (1, k), (1, s))
        self.cv2 = Conv(c_, c2, (k, 1), (s, 1), g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``cv2(cv1(x))``, plus ``x`` when the residual applies."""
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with 3 convolutions: ``cv3(cat(m(cv1(x)), cv2(x)))``."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``cv3(cat(m(cv1(x)), cv2(x)))`` (b, c2, h, w)."""
        return self.cv3(cat_channels((self.m(self.cv1(x)), self.cv2(x))))


class C3x(C3):
    """C3 whose inner blocks are CrossConv."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(CrossConv(c_, c_, 3, 1, g, 1.0, shortcut) for _ in range(n)))


class C3TR(C3):
    """C3 whose inner block is a TransformerBlock with 4 heads and ``n`` layers."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = TransformerBlock(c_, c_, 4, n)


class C3SPP(C3):
    """C3 whose inner block is an SPP."""

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13), n: int = 1, shortcut: bool = True,
                 g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = SPP(c_, c_, k)


class C3Ghost(C3):
    """C3 whose inner blocks are GhostBottlenecks."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(GhostBottleneck(c_, c_) for _ in range(n)))


def _poolable(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` stored channels_last on CPU, where max pooling runs ~5x faster than on NCHW (same values).

    Traced graphs (TorchScript, ONNX export) and other devices get ``x`` unchanged.
    """
    if x.device.type != "cpu" or is_tracing():
        return x
    return x.contiguous(memory_format=torch.channels_last)


class SPP(nn.Module):
    """Spatial pyramid pooling: concat of the input and stride-1 max pools of sizes ``k``."""

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``cv2(cat(x', pools of x'))`` with ``x' = cv1(x)`` (same spatial size)."""
        x = self.cv1(x)
        pool_input = _poolable(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.cv2(cat_channels([x] + [max_pool(m, pool_input) for m in self.m]))


class SPPF(nn.Module):
    """Fast SPP: three chained k x k max pools, equivalent to SPP(k, 2k-1, 3k-2)."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``cv2(cat(x', p(x'), p(p(x')), p(p(p(x')))))`` with ``x' = cv1(x)`` (same spatial size)."""
        x = self.cv1(x)
        y1 = max_pool(self.m, _poolable(x))
        y2 = max_pool(self.m, y1)
        return self.cv2(cat_channels((x, y1, y2, max_pool(self.m, y2))))


class Focus(nn.Module):
    """Space-to-depth (4 pixel phases concatenated on channels) followed by a Conv (pre-v6 stem)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: Optional[int] = None, g: int = 1,
                 act: Union[bool, nn.Module] = True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``conv`` of the four pixel phases of x (b, 4c, h/2, w/2) concatenated on channels."""
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class GhostConv(nn.Module):
    """Ghost convolution: half the outputs from a Conv, half from a cheap 5x5 depth-wise Conv of those."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: Union[bool, nn.Module] = True):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, None, g, act=act)
        self.cv2 = Conv(c_, c_, 5, 1, None, c_, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``cat(y, cv2(y))`` with ``y = cv1(x)``."""
        y = self.cv1(x)
        return cat_channels((y, self.cv2(y)))


class GhostBottleneck(nn.Module):
    """GhostConv -> (depth-wise Conv if strided) -> GhostConv, plus a shortcut path."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1):
        super().__init__()
        c_ = c2 // 2
        self.conv = nn.Sequential(
            GhostConv(c1, c_, 1, 1),
            DWConv(c_, c_, k, s, act=False) if s == 2 else nn.Identity(),
            GhostConv(c_, c2, 1, 1, act=False),
        )
        self.shortcut = (nn.Sequential(DWConv(c1, c1, k, s, act=False), Conv(c1, c2, 1, 1, act=False))
                         if s == 2 else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``conv(x) + shortcut(x)``."""
        return self.conv(x) + self.shortcut(x)


class Contract(nn.Module):
    """Fold space into channels: (b, c, h, w) -> (b, c*g*g, h/g, w/g) with ``gain`` g."""

    def __init__(self, gain: int = 2):
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x folded (b, c*g*g, h/g, w/g)."""
        b, c, h, w = x.shape
        s = self.gain
        x = x.view(b, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4).contiguous()
        return x.view(b, c * s * s, h // s, w // s)


class Expand(nn.Module):
    """Unfold channels into space: (b, c, h, w) -> (b, c/g^2, h*g, w*g) with ``gain`` g."""

    def __init__(self, gain: int = 2):
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x unfolded (b, c/g^2, h*g, w*g)."""
        b, c, h, w = x.shape
        s = self.gain
        x = x.view(b, s, s, c // s**2, h, w).permute(0, 3, 4, 1, 5, 2).contiguous()
        return x.view(b, c // s**2, h * s, w * s)


class Concat(nn.Module):
    """Concatenate a list of tensors along dimension ``d``."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Return the inputs concatenated along dimension ``d``."""
        return cat_channels(x) if self.d == 1 else torch.cat(x, self.d)


class Proto(nn.Module):
    """Mask prototype branch of the segmentation head: Conv3x3 -> nearest x2 -> Conv3x3 -> Conv1x1 to ``c2``."""

    def __init__(self, c1: int, c_: int = 256, c2: int = 32):
        super().__init__()
        self.cv1 = Conv(c1, c_, k=3)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.cv2 = Conv(c_, c_, k=3)
        self.cv3 = Conv(c_, c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (b, c2, 2h, 2w) mask prototypes."""
        return self.cv3(self.cv2(self.upsample(self.cv1(x))))


class Classify(nn.Module):
    """Classification head: Conv to 1280 -> global average pool -> dropout -> Linear to ``c2`` classes."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: Optional[int] = None, g: int = 1,
                 dropout_p: float = 0.0):
        super().__init__()
        c_ = 1280
        self.conv = Conv(c1, c_, k, s, autopad(k, p), g)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=dropout_p, inplace=True)
        self.linear = nn.Linear(c_, c2)

    def forward(self, x: Union[torch.Tensor, list[torch.Tensor]]) -> torch.Tensor:
        """Return class logits (b, c2); a list input is concatenated on channels first."""
        if isinstance(x, list):
            x = torch.cat(x, 1)
        return self.linear(self.drop(self.pool(self.conv(x)).flatten(1)))


# Non-pickled inference wrappers live in their own modules; upstream code imports them from here, so they are
# re-exported lazily (importing them eagerly would pull NMS, plotting and image IO into every model import).
_LAZY_REEXPORTS = {"DetectMultiBackend": "models.backends", "AutoShape": "models.autoshape",
                   "Detections": "models.autoshape"}


def __getattr__(name: str):
    if name in _LAZY_REEXPORTS:
        return getattr(importlib.import_module(_LAZY_REEXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


for _cls in (Conv, GhostConv, Bottleneck, GhostBottleneck, SPP, SPPF, DWConv, Focus, CrossConv):
    add_module(_cls.__name__, _cls, role="conv")
for _cls in (BottleneckCSP, C3, C3TR, C3Ghost, C3x):
    add_module(_cls.__name__, _cls, role="csp")
add_module("C3SPP", C3SPP, role="conv")
add_module("DWConvTranspose2d", DWConvTranspose2d, role="conv")
add_module("nn.ConvTranspose2d", nn.ConvTranspose2d, role="conv")
add_module("nn.BatchNorm2d", nn.BatchNorm2d, role="bn")
add_module("Concat", Concat, role="concat")
add_module("Contract", Contract, role="contract")
add_module("Expand", Expand, role="expand")
allow_module_classes(__name__)
