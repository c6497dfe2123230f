"""PyTorch helpers: devices, model inspection (params, GFLOPs), Conv+BN fusion, weight init, timing."""

from __future__ import annotations

import math
import os
import platform
import time
from copy import deepcopy
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.dist import torch_distributed_zero_first
from utils.ema import ModelEMA
from utils.logging import LOGGER
from utils.modules import copy_attr, de_parallel
from utils.optim import EarlyStopping, smart_optimizer

__all__ = [
    "copy_attr", "count_params", "de_parallel", "fuse_conv_and_bn", "initialize_weights", "is_channels_last",
    "is_tracing", "layer_flops", "model_flops", "model_info", "profile", "scale_img", "select_device",
    "smart_inference_mode", "time_sync", "torch_distributed_zero_first",
    "EarlyStopping", "ModelEMA", "smart_optimizer",
]


def select_device(device: str = "", batch_size: int = 0, newline: bool = True) -> torch.device:
    """Return the torch device for an upstream-style device string ('', 'cpu', '0', '0,1', 'cuda:0', 'mps').

    Raises:
        ValueError: when CUDA devices are requested but not available, naming what was asked.
    """
    device = str(device).strip().lower().replace("cuda:", "").replace("none", "")
    info = f"YOLOv5 🚀 Python-{platform.python_version()} torch-{torch.__version__} "
    if device in ("cpu", "mps"):
        if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("--device mps requested but MPS is not available on this machine")
        chosen = torch.device(device)
        info += device.upper()
    elif device:
        ids = [d for d in device.split(",") if d]
        if not torch.cuda.is_available() or torch.cuda.device_count() < len(ids):
            raise ValueError(f"Invalid CUDA '--device {device}' requested, use '--device cpu' or pass valid CUDA "
                             f"device(s); torch.cuda.is_available()={torch.cuda.is_available()}, "
                             f"device_count={torch.cuda.device_count()}")
        if batch_size and len(ids) > 1 and batch_size % len(ids):
            raise ValueError(f"batch-size {batch_size} not a multiple of the number of devices {len(ids)}")
        chosen = torch.device(f"cuda:{ids[0]}")
        info += ", ".join(_cuda_desc(int(i)) for i in ids)
    elif torch.cuda.is_available():
        chosen = torch.device("cuda:0")
        info += _cuda_desc(0)
    else:
        chosen = torch.device("cpu")
        info += "CPU"
    LOGGER.info(info if newline else info.rstrip())
    return chosen


def _cuda_desc(i: int) -> str:
    p = torch.cuda.get_device_properties(i)
    return f"CUDA:{i} ({p.name}, {p.total_memory / (1 << 20):.0f}MiB)"


def time_sync() -> float:
    """Return ``time.time()`` after synchronising CUDA (when available) so GPU work is included."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.time()


def smart_inference_mode(fn=None):
    """Decorator: ``torch.inference_mode`` (or ``no_grad`` on old torch)."""
    decorator = torch.inference_mode if hasattr(torch, "inference_mode") else torch.no_grad
    return decorator()(fn) if fn is not None else decorator()


def initialize_weights(model: nn.Module) -> None:
    """Apply YOLOv5's init: BatchNorm eps=1e-3, momentum=0.03; in-place activations; default conv init."""
    for m in model.modules():
        t = type(m)
        if t is nn.BatchNorm2d:
            m.eps = 1e-3
            m.momentum = 0.03
        elif t in (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU):
            m.inplace = True


def is_tracing() -> bool:
    """True while TorchScript traces or scripts the running code (export): fast paths must keep plain ops then."""
    return torch.jit.is_tracing() or torch.jit.is_scripting()


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D tensor stored channels_last (NHWC) that is not also plain contiguous (e.g. C or H*W > 1)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


@torch.no_grad()
def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a Conv2d (with bias, no gradients) equivalent to ``bn(conv(x))`` in eval mode.

    ``W' = diag(gamma / sqrt(var + eps)) W`` and ``b' = gamma * (b - mean) / sqrt(var + eps) + beta``.
    """
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True)
    fused = fused.requires_grad_(False).to(conv.weight.device)
    scale = bn.weight.div(torch.sqrt(bn.running_var + bn.eps))
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))  # any memory format (channels_last models too)
    fused = fused.to(memory_format=torch.channels_last if is_channels_last(conv.weight) else torch.contiguous_format)
    conv_bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, device=conv.weight.device)
    fused.bias.copy_(scale * (conv_bias - bn.running_mean) + bn.bias)
    return fused


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of parameters (optionally only those requiring grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_flops(model: nn.Module, imgsz: int | Sequence[int] = 640) -> Optional[float]:
    """Return GFLOPs at ``imgsz`` with upstream's convention (thop MACs x 2 at stride px, scaled), or None.

    The model is profiled on a deep copy at ``max(stride, 32)`` pixels so the caller's model is untouched.
    """
    try:
        import thop
    except ImportError:
        return None
    try:
        p = next(model.parameters())
        stride = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
        im = torch.empty((1, p.shape[1], stride, stride), device=p.device)
        macs = thop.profile(deepcopy(model), inputs=(im,), verbose=False)[0]
        h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
        return macs / 1e9 * 2 * h / stride * w / stride
    except Exception as e:  # profiling is informative only; never fail a build for it
        LOGGER.debug(f"FLOPs profiling failed: {e}")
        return None


def model_info(model: nn.Module, verbose: bool = False, imgsz: int | Sequence[int] = 640) -> tuple:
    """Log and return ``(layers, params, gradients, gflops)`` as upstream's summary line."""
    n_p, n_g = count_params(model), count_params(model, trainable_only=True)
    if verbose:
        LOGGER.info(f"{'layer':>5} {'name':>40} {'gradient':>9} {'parameters':>12} {'shape':>20} {'mu':>10} "
                    f"{'sigma':>10}")
        for i, (name, p) in enumerate(model.named_parameters()):
            LOGGER.info(f"{i:5g} {name:>40} {str(p.requires_grad):>9} {p.numel():12g} {str(list(p.shape)):>20} "
                        f"{p.mean():10.3g} {p.std() if p.numel() > 1 else 0.0:10.3g}")
    flops = model_flops(model, imgsz)
    fs = f", {flops:.1f} GFLOPs" if flops is not None else ""
    name = _model_name(model)
    n_layers = len(list(model.modules()))
    LOGGER.info(f"{name} summary: {n_layers} layers, {n_p} parameters, {n_g} gradients{fs}")
    return n_layers, n_p, n_g, flops


def _model_name(model: nn.Module) -> str:
    yaml_file = getattr(model, "yaml_file", "")
    return os.path.splitext(yaml_file)[0].replace("yolov5", "YOLOv5") if yaml_file else "Model"


def scale_img(img: torch.Tensor, ratio: float = 1.0, same_shape: bool = False, gs: int = 32) -> torch.Tensor:
    """Resize a (b, 3, h, w) batch by ``ratio`` (bilinear) and pad to a multiple of ``gs`` with 0.447 (TTA)."""
    if ratio == 1.0:
        return img
    h, w = img.shape[2:]
    s = (int(h * ratio), int(w * ratio))
    img = F.interpolate(img, size=s, mode="bilinear", align_corners=False)
    if not same_shape:
        h, w = (math.ceil(x * ratio / gs) * gs for x in (h, w))
    return F.pad(img, [0, w - s[1], 0, h - s[0]], value=0.447)


def layer_flops(module: nn.Module, x: Any) -> float:
    """Return the GFLOPs (thop MACs x 2) of one forward of ``module`` on input ``x``, or 0.0 without thop."""
    try:
        import thop
    except ImportError:
        return 0.0
    return thop.profile(deepcopy(module), inputs=(x,), verbose=False)[0] / 1e9 * 2


def profile(input: Any, ops: Any, n: int = 10, device: Optional[torch.device] = None) -> list:
    """Time forward and backward passes of each op (module or callable) on each input; log and return the table.

    Returns one row per (input, op): ``[params, GFLOPs, memory GB, forward ms, backward ms, in shape, out shape]``
    (times are means over ``n`` runs; backward is ``nan`` when the output needs no gradient).
    """
    device = device or torch.device("cpu")
    inputs = input if isinstance(input, list) else [input]
    ops = ops if isinstance(ops, list) else [ops]
    LOGGER.info(f"{'Params':>12s}{'GFLOPs':>12s}{'GPU_mem (GB)':>14s}{'forward (ms)':>14s}{'backward (ms)':>14s}"
                f"{'input':>24s}{'output':>24s}")
    results = []
    for x in inputs:
        x = x.to(device).requires_grad_()
        for op in ops:
            op = op.to(device) if hasattr(op, "to") else op
            flops = layer_flops(op, x) if isinstance(op, nn.Module) else 0.0
            t_fwd, t_bwd = _time_op(op, x, n)
            mem = torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0.0
            y = op(x)
            s_in, s_out = (tuple(v.shape) if isinstance(v, torch.Tensor) else "list" for v in (x, y))
            n_p = sum(p.numel() for p in op.parameters()) if isinstance(op, nn.Module) else 0
            LOGGER.info(f"{n_p:12}{flops:12.4g}{mem:>14.3f}{t_fwd:14.4g}{t_bwd:14.4g}{str(s_in):>24s}{str(s_out):>24s}")
            results.append([n_p, flops, mem, t_fwd, t_bwd, s_in, s_out])
    return results


def _time_op(op: Any, x: torch.Tensor, n: int) -> tuple[float, float]:
    """Return mean forward and backward milliseconds of ``op(x)`` over ``n`` runs."""
    t_fwd = t_bwd = 0.0
    for _ in range(n):
        t0 = time_sync()
        y = op(x)
        t1 = time_sync()
        out = y if isinstance(y, torch.Tensor) else y[0] if isinstance(y, (list, tuple)) else None
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.sum().backward()
            t_bwd += (time_sync() - t1) * 1000 / n
        else:
            t_bwd = float("nan")
        t_fwd += (t1 - t0) * 1000 / n
    return t_fwd, t_bwd
