"""Helpers on ``nn.Module`` objects that the EMA, the loss and the checkpoint writer share: unwrapping parallel
wrappers and copying attributes between models."""

from __future__ import annotations

from typing import Any, Sequence

import torch.nn as nn


def de_parallel(model: nn.Module) -> nn.Module:
    """Return the wrapped module of a DataParallel/DistributedDataParallel model, else the model itself."""
    return model.module if isinstance(model, (nn.parallel.DataParallel, nn.parallel.DistributedDataParallel)) else model


def copy_attr(a: Any, b: Any, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
    """Copy public attributes of ``b`` onto ``a`` (only ``include`` if given, never ``exclude`` or '_' names)."""
    for k, v in b.__dict__.items():
        if (include and k not in include) or k.startswith("_") or k in exclude:
            continue
        setattr(a, k, v)
