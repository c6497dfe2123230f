"""Darknet building blocks for the legacy YOLOv1 / YOLOv3 YAMLs (registered YAML modules).

- ``DarknetConv(c1, c2, k=1, s=1, p=None, slope=0.1)``: Conv2d (no bias) -> BatchNorm2d -> LeakyReLU(``slope``),
  the unit of every Darknet network. It subclasses :class:`models.common.Conv`, so ``model.fuse()`` folds its
  batch norm like any other Conv and checkpoints keep the ``conv/bn/act`` attribute names.
- ``DarknetResidual(c1, c2, n=1)``: ``n`` Darknet-53 residual units, each ``x + conv3x3(conv1x1(x, c2/2), c2)``
  (YAML role ``csp``: the row's repeat count becomes ``n`` so one layer index holds the whole stage).

YAML glossary (terse names kept for the YOLOv5 row format): ``c1`` input channels, ``c2`` output channels, ``k``
kernel, ``s`` stride, ``p`` padding (None = same), ``n`` repeats.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from models.common import Conv
from models.registry import add_module
from utils.checkpoint import register_safe_globals


class DarknetConv(Conv):
    """Conv2d (no bias) -> BatchNorm2d -> LeakyReLU(slope); shape (B, c1, H, W) -> (B, c2, H/s, W/s)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, slope: float = 0.1):
        super().__init__(c1, c2, k, s, p, act=nn.LeakyReLU(slope, inplace=True))


class DarknetResidual(nn.Module):
    """``n`` Darknet-53 residual units at constant width ``c2`` (``c1`` must equal ``c2``).

    Each unit is ``x + DarknetConv3x3(DarknetConv1x1(x, c2 // 2), c2)``; shape (B, c2, H, W) is preserved.
    """

    def __init__(self, c1: int, c2: int, n: int = 1):
        super().__init__()
        if c1 != c2:
            raise ValueError(f"DarknetResidual keeps the width: input channels {c1} != output channels {c2}")
        hidden = c2 // 2
        self.m = nn.ModuleList(nn.Sequential(DarknetConv(c2, hidden, 1), DarknetConv(hidden, c2, 3)) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x (b, c2, h, w) after the ``n`` residual units."""
        for unit in self.m:
            x = x + unit(x)
        return x


add_module("DarknetConv", DarknetConv, role="conv")
add_module("DarknetResidual", DarknetResidual, role="csp")
register_safe_globals(DarknetConv, DarknetResidual)
