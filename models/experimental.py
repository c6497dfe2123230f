"""Experimental layers and model loading (pickle surface): MixConv2d, Sum, Ensemble and ``attempt_load``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from models.common import Conv, CrossConv, GhostBottleneck, GhostConv  # noqa: F401  (re-exported for old pickles)
from models.loading import load_model
from models.registry import add_module
from utils.checkpoint import allow_module_classes


class Sum(nn.Module):
    """Weighted (learned, sigmoid*2) or plain sum of ``n`` inputs."""

    def __init__(self, n: int, weight: bool = False):
        super().__init__()
        self.weight = weight
        self.iter = range(n - 1)
        if weight:
            self.w = nn.Parameter(-torch.arange(1.0, n) / 2, requires_grad=True)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Return the (optionally weighted) sum of the input list."""
        y = x[0]
        if self.weight:
            w = torch.sigmoid(self.w) * 2
            for i in self.iter:
                y = y + x[i + 1] * w[i]
        else:
            for i in self.iter:
                y = y + x[i + 1]
        return y


class MixConv2d(nn.Module):
    """Mixed depth-wise convolution: output channels split across kernel sizes ``k``, then BN + SiLU + residual."""

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (1, 3), s: int = 1, equal_ch: bool = True):
        super().__init__()
        n = len(k)
        if equal_ch:
            idx = torch.linspace(0, n - 1e-6, c2).floor()
            c_ = [int((idx == g).sum()) for g in range(n)]
        else:
            b = [c2] + [0] * n
            a = np.eye(n + 1, n, k=-1)
            a -= np.roll(a, 1, axis=1)
            a *= np.array(k) ** 2
            a[0] = 1
            c_ = [int(x) for x in np.linalg.lstsq(a, b, rcond=None)[0].round()]
        self.m = nn.ModuleList(
            nn.Conv2d(c1, c, kk, s, kk // 2, groups=math.gcd(c1, c), bias=False) for kk, c in zip(k, c_, strict=True))
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x + act(bn(cat(convs(x))))``."""
        return x + self.act(self.bn(torch.cat([m(x) for m in self.m], 1)))


class Ensemble(nn.ModuleList):
    """List of models whose inference outputs are concatenated along the box axis (NMS ensemble)."""

    def forward(self, x: torch.Tensor, augment: bool = False, profile: bool = False, visualize: bool = False):
        """Return ``(cat of the members' inference outputs along the box axis, None)``."""
        y = [module(x, augment, profile, visualize)[0] for module in self]
        return torch.cat(y, 1), None


def attempt_load(weights: Union[str, Path, Sequence[Union[str, Path]]], device: Optional[torch.device] = None,
                 inplace: bool = True, fuse: bool = True) -> nn.Module:
    """Load one checkpoint (a model) or several (an ``Ensemble``) through the safe loader.

    Each file is read with ``torch.load(weights_only=True)`` and an explicit allow-list (see
    ``utils.checkpoint``); ``ema`` is preferred over ``model``; legacy compatibility fixes are applied once
    (``models.loading.load_model``).
    """
    paths = list(weights) if isinstance(weights, (list, tuple)) else [weights]
    models = [load_model(w, device=device, inplace=inplace, fuse=fuse) for w in paths]
    if len(models) == 1:
        return models[0]
    ensemble = Ensemble(models)
    for attr in ("names", "nc", "yaml"):
        setattr(ensemble, attr, getattr(models[0], attr, None))
    ensemble.stride = models[int(torch.argmax(torch.tensor([m.stride.max() for m in models])))].stride
    ncs = {getattr(m, "nc", None) or m.model[-1].nc for m in models}
    if len(ncs) != 1:
        raise ValueError(f"Models have different class counts: {[str(p) for p in paths]} -> {sorted(ncs)}")
    return ensemble


add_module("MixConv2d", MixConv2d, role="conv")
add_module("Sum", Sum, role="passthrough")
allow_module_classes(__name__)
