"""Turn a checkpoint into a ready model: read it safely, pick the model object, apply legacy fixes, fuse.

The file format and the safe unpickling live in :mod:`utils.checkpoint`; importing this module imports the model
classes, which registers them in its allow-list. Legacy compatibility fixes for old checkpoints live in
:func:`upgrade_legacy_model` and nowhere else.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn

from models.yolo import Detect, DetectionModel, Segment, SegmentationModel
from utils.checkpoint import PathLike, extract_model, torch_safe_load

__all__ = ["extract_model", "load_model", "model_from_checkpoint", "upgrade_legacy_model"]

_INPLACE_TYPES = (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU, Detect, DetectionModel, Segment,
                  SegmentationModel)


def upgrade_legacy_model(model: nn.Module, inplace: bool = True) -> nn.Module:
    """Apply upstream's compatibility fixes to a model unpickled from an older checkpoint (in place); returns it.

    Missing ``stride`` becomes ``tensor([32.])``; list ``names`` become a dict; activations, ``Detect``,
    ``DetectionModel``, ``Segment`` and ``SegmentationModel`` get ``inplace``; a pre-v6 ``anchor_grid`` buffer
    becomes a list; old ``nn.Upsample`` layers get ``recompute_scale_factor = None``.
    """
    if not hasattr(model, "stride"):
        model.stride = torch.tensor([32.0])
    if isinstance(getattr(model, "names", None), (list, tuple)):
        model.names = dict(enumerate(model.names))
    for m in model.modules():
        t = type(m)
        if t in _INPLACE_TYPES:
            m.inplace = inplace
            if t is Detect and not isinstance(m.anchor_grid, list):
                delattr(m, "anchor_grid")
                m.anchor_grid = [torch.zeros(1)] * m.nl
        elif t is nn.Upsample and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
    return model


def load_model(weights: PathLike, device: Optional[torch.device] = None, inplace: bool = True,
               fuse: bool = True) -> nn.Module:
    """Return the float32 model stored in a checkpoint (``ema`` preferred), upgraded, fused if asked, in eval mode.

    Raises:
        FileNotFoundError, UnsafeCheckpointError, RuntimeError: from :func:`utils.checkpoint.torch_safe_load`.
        ValueError: the file holds no model object (e.g. a plain state dict).
    """
    return model_from_checkpoint(torch_safe_load(weights), weights, device, inplace, fuse)


def model_from_checkpoint(ckpt: Any, source: PathLike = "<checkpoint>", device: Optional[torch.device] = None,
                          inplace: bool = True, fuse: bool = True) -> nn.Module:
    """:func:`load_model` for a checkpoint already in memory (a dict or a bare model); ``ckpt``'s model is used in
    place (deepcopy it first to keep it). ``source`` names it in errors."""
    model = extract_model(ckpt, source)
    model = model.to(device or "cpu").float()
    upgrade_legacy_model(model, inplace)
    if fuse and hasattr(model, "fuse"):
        model = model.fuse()
    return model.eval()
