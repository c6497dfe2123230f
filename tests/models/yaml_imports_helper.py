"""A module outside ``models/`` that registers a layer on import; model YAMLs reach it via ``imports:``."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.registry import register_module


@register_module("ChannelGate", role="custom", parse=lambda args, ch_in, ctx: ([ch_in[0], *args], ch_in[0]))
class ChannelGate(nn.Module):
    """Multiplies each channel by a learned sigmoid gate; output channels equal the input's."""

    def __init__(self, channels: int, init: float = 0.0):
        super().__init__()
        self.gate = nn.Parameter(torch.full((1, channels, 1, 1), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate.sigmoid()
