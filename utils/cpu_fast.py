"""CPU fast-path kernels for model layers; nothing here is pickled with a model.

Measured bottlenecks of bf16 + channels_last on the 2-core AMX Xeon, and what this module does about them:

* Training, ``torch.cat`` backward. The backward of a channel concatenation hands each input a channel slice of
  the incoming gradient. A channel slice of an NHWC tensor is strided (runs of ``C_i`` values ``C`` apart), and
  the element-wise backward kernels that consume it next (SiLU, add, max-pool, upsample) fall off their vectorised
  path: ``silu_backward`` on a bf16 (16, 16, 80, 80) slice measured 4-6x slower than on a contiguous gradient.
  :func:`cat_channels` gives the same values and gradients but copies each gradient slice to channels_last first.
* Inference, fused ``Conv`` layers. Under autocast every forward casts each fp32 weight to bf16, oneDNN reorders
  it to its blocked layout, and the SiLU is a separate pass over the output. :class:`PackedConvAct` casts and
  packs the weight once and runs convolution + activation as one oneDNN primitive
  (``torch.ops.mkldnn._convolution_pointwise``, the kernel ``torch.compile`` uses on CPU); yolov5s@640 batch 1
  measured about 12 % faster end to end. :func:`install_packed_convs` asks every module of a model for the
  convolutions it can run packed (a module's ``packable_convs()`` method returning :class:`PackableConv` entries:
  fused ``Conv`` layers, the output convolutions of ``Detect`` heads) and keeps one kernel per entry in a side
  table keyed weakly by the module, never in the module's ``__dict__``, so pickling a model with kernels installed
  stores plain torch modules only. A kernel runs only where it is exact to use: CPU, bf16 autocast active, no
  autograd recording, not tracing.
* Inference, stride-1 max pooling (SPPF, SPP). :func:`max_pool` runs a k x k pool as a 1 x k then a k x 1 pool
  (identical values) when no gradient is needed.
"""

from __future__ import annotations

import weakref
from typing import Callable, Iterable, NamedTuple, Optional, Protocol, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.torch_utils import is_channels_last, is_tracing


class _ChannelsLastCat(torch.autograd.Function):
    """``torch.cat(xs, 1)`` whose backward returns channels_last-contiguous gradient slices."""

    @staticmethod
    def forward(ctx, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.sizes = [t.shape[1] for t in tensors]
        return torch.cat(tensors, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(g.contiguous(memory_format=torch.channels_last) for g in grad.split(ctx.sizes, 1))


def _wants_channels_last_grads(tensors: Sequence[torch.Tensor]) -> bool:
    first = tensors[0]
    return (torch.is_grad_enabled() and first.device.type == "cpu" and any(t.requires_grad for t in tensors)
            and is_channels_last(first) and not is_tracing())


def cat_channels(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors, 1)`` for (b, c_i, h, w) tensors; on CPU channels_last training, with NHWC gradients."""
    if _wants_channels_last_grads(tensors):
        return _ChannelsLastCat.apply(*tensors)
    return torch.cat(tuple(tensors), 1)


def max_pool(pool: nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    """``pool(x)``; on CPU without autograd, a square stride-1 pool runs as a (1, k) then a (k, 1) pool.

    Max is separable, so the values are identical; the two thin pools measured 1.5-1.7x faster than one k x k
    pool on a channels_last (1, 256, 20, 20) input (the SPPF of yolov5s@640), fp32 and bf16 alike.
    """
    k, p = pool.kernel_size, pool.padding
    if (isinstance(k, int) and isinstance(p, int) and pool.stride in (1, (1, 1)) and pool.dilation in (1, (1, 1))
            and not pool.ceil_mode and not pool.return_indices and x.device.type == "cpu" and x.dim() == 4
            and not (torch.is_grad_enabled() and x.requires_grad) and not is_tracing()):
        return F.max_pool2d(F.max_pool2d(x, (1, k), 1, (0, p)), (k, 1), 1, (p, 0))
    return pool(x)


def _pointwise_attr(act: nn.Module) -> tuple[str, list] | None:
    """oneDNN post-op name and scalars for an activation module, or None when it has no fused equivalent."""
    if isinstance(act, nn.Identity):
        return "none", []
    if isinstance(act, nn.SiLU):
        return "swish", []
    if isinstance(act, nn.ReLU):
        return "relu", []
    if isinstance(act, nn.Hardswish):
        return "hardswish", []
    if isinstance(act, nn.LeakyReLU):
        return "leaky_relu", [act.negative_slope]
    return None


def onednn_bf16_supported() -> bool:
    """True when oneDNN runs bf16 on this CPU (it needs AVX512BW/VL/DQ or AVX-NE-CONVERT; plain autocast does not)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def packed_kernels_available() -> bool:
    """True when this torch build has oneDNN's fused pointwise convolution op and oneDNN runs bf16 on this CPU."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and onednn_bf16_supported())


class ConvKernel(Protocol):
    """What the side table holds for a module: a callable replacing ``act(conv(x))`` where it :meth:`applies`."""

    def applies(self, x: torch.Tensor) -> bool:
        """True when this kernel may replace the module's plain path for input ``x``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``act(conv(x))`` for a (b, c1, h, w) input."""


KernelFactory = Callable[[nn.Conv2d, str, list], ConvKernel]


class PackableConv(NamedTuple):
    """One convolution a module offers for packing (returned by a module's ``packable_convs()`` method).

    Attributes:
        owner: the module whose forward asks :func:`packed_kernel` ``(owner, x)`` for its kernel.
        conv: the convolution to pack (its weights stay the source of truth).
        act: the activation applied after ``conv`` (None: no activation).
        head: True for a head's output convolution, packed only when the model also has packable fused layers
            (an inference model).
    """

    owner: nn.Module
    conv: nn.Conv2d
    act: Optional[nn.Module] = None
    head: bool = False


class PackedConvAct:
    """``act(conv(x))`` in bf16 as one oneDNN primitive, with the bf16 weight packed once per weight version.

    The fp32 ``conv`` stays the source of truth, so a changed weight (``load_state_dict``, in-place edits) is
    re-packed on the next call; ``conv`` is held weakly (a replaced or deleted convolution turns the kernel off).
    Inputs of any size and batch are accepted (the packed layout is chosen for the first input size; others are
    correct, if re-ordered). Output: bf16, channels_last.
    """

    def __init__(self, conv: nn.Conv2d, attr: str, scalars: list) -> None:
        self._conv = weakref.ref(conv)
        self.attr = attr
        self.scalars = scalars
        self._key: tuple | None = None
        self._weight: torch.Tensor | None = None
        self._bias: torch.Tensor | None = None

    @property
    def conv(self) -> nn.Conv2d | None:
        """The convolution this kernel runs (None once it no longer exists)."""
        return self._conv()

    def applies(self, x: torch.Tensor) -> bool:
        """True for a CPU input under active bf16 autocast, with no gradient needed and no tracing."""
        conv = self.conv
        return (conv is not None and x.device.type == "cpu" and x.dim() == 4 and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16
                and not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
                and not is_tracing())

    @staticmethod
    def _params(conv: nn.Conv2d) -> tuple[list[int], list[int], list[int], int]:
        return list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups

    def _packed(self, conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight, bias = conv.weight, conv.bias
        key = (_identity(weight), None if bias is None else _identity(bias))
        if key != self._key:
            with torch.no_grad():
                w = weight.detach().to(torch.bfloat16).contiguous(memory_format=torch.channels_last).to_mkldnn()
                self._weight = torch._C._nn.mkldnn_reorder_conv2d_weight(w, *self._params(conv), list(x.shape))
                self._bias = None if bias is None else bias.detach().to(torch.bfloat16)
            self._key = key
        return self._weight, self._bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``act(conv(x))`` (bf16, channels_last) for a (b, c1, h, w) CPU input."""
        conv = self.conv
        weight, bias = self._packed(conv, x)
        return torch.ops.mkldnn._convolution_pointwise(x.to(torch.bfloat16), weight, bias, *self._params(conv),
                                                       self.attr, self.scalars, "")


_KERNELS: weakref.WeakKeyDictionary[nn.Module, ConvKernel] = weakref.WeakKeyDictionary()


def installed_kernel(module: nn.Module) -> ConvKernel | None:
    """The kernel installed for ``module`` (whatever the input), or None."""
    return _KERNELS.get(module)


def packed_kernel(module: nn.Module, x: torch.Tensor) -> ConvKernel | None:
    """The kernel installed for ``module`` if it applies to input ``x``, else None (the module's plain path)."""
    if not _KERNELS:
        return None
    kernel = _KERNELS.get(module)
    return kernel if kernel is not None and kernel.applies(x) else None


def _identity(t: torch.Tensor) -> tuple[int, int]:
    """(storage address, in-place version) of a parameter; inference tensors have no version counter (-1)."""
    return t.data_ptr(), -1 if t.is_inference() else t._version


def packable_convs(model: nn.Module) -> Iterable[PackableConv]:
    """Every :class:`PackableConv` offered by the modules of ``model`` (``model`` included), in module order.

    A module offers convolutions through a ``packable_convs()`` method returning its own entries (not its
    children's); modules without the method offer none.
    """
    for m in model.modules():
        offer = getattr(type(m), "packable_convs", None)
        if callable(offer):
            yield from offer(m)


def _packable(conv: nn.Conv2d) -> bool:
    return isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def install_packed_convs(model: nn.Module, kernel: KernelFactory | None = None) -> int:
    """Install a kernel for every offered convolution whose activation oneDNN can fuse; returns the count.

    Layers (``head=False`` entries) are packed first; head output convolutions only when at least one layer was,
    i.e. on a fused inference model (training models, still holding BatchNorm, offer no layers). ``kernel`` builds
    a kernel from ``(conv, post-op name, post-op scalars)``; by default :class:`PackedConvAct`, in which case this
    is a no-op returning 0 where the oneDNN kernel is unavailable.
    """
    if kernel is None:
        if not packed_kernels_available():
            return 0
        kernel = PackedConvAct
    entries = list(packable_convs(model))
    count = 0
    for heads in (False, True):
        if heads and not count:
            break
        for entry in entries:
            if entry.head != heads or not _packable(entry.conv):
                continue
            attr = _pointwise_attr(entry.act if entry.act is not None else nn.Identity())
            if attr is not None:
                _KERNELS[entry.owner] = kernel(entry.conv, *attr)
                count += 1
    return count


def remove_packed_convs(model: nn.Module) -> int:
    """Remove the kernels of every module in ``model`` (back to ``act(conv(x))``); returns how many were removed."""
    count = 0
    for m in model.modules():
        if _KERNELS.pop(m, None) is not None:
            count += 1
    return count
