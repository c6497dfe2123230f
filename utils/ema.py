"""Exponential moving average of model weights (upstream ``ModelEMA`` semantics)."""

from __future__ import annotations

import math
from copy import deepcopy
from typing import Sequence

import torch
import torch.nn as nn

from utils.modules import copy_attr, de_parallel


class ModelEMA:
    """Keep an fp32, eval-mode, gradient-free copy of a model whose floating tensors track an EMA of the model's.

    The decay ramps up with the number of updates: ``d = decay * (1 - exp(-updates / tau))``, so early updates
    follow the model closely. Every floating-point ``state_dict`` entry is averaged (parameters and buffers such as
    BatchNorm statistics and anchors); integer buffers (``num_batches_tracked``) are left alone.

    Attributes:
        ema: the averaged model. updates: number of ``update`` calls so far. decay: the asymptotic decay.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0) -> None:
        self.ema = deepcopy(de_parallel(model)).float().eval()
        self.updates = updates
        self.decay = decay
        self.tau = tau
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """Return ``decay * (1 - exp(-updates / tau))`` for the current ``updates`` count."""
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Increment ``updates`` and blend: ``ema_v = d * ema_v + (1 - d) * model_v`` for floating entries."""
        self.updates += 1
        d = self.current_decay()
        model_state = de_parallel(model).state_dict()
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(model_state[name].detach().to(value.dtype), alpha=1 - d)

    def update_attr(self, model: nn.Module,
                    include: Sequence[str] = ("yaml", "nc", "hyp", "names", "stride", "class_weights"),
                    exclude: Sequence[str] = ("process_group", "reducer")) -> None:
        """Copy the listed plain attributes (not tensors in the state dict) from ``model`` onto ``ema``."""
        copy_attr(self.ema, model, include, exclude)
