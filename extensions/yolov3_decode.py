"""The two YOLOv3 box parameterisations (decodes) shared by :mod:`extensions.yolov3` and :mod:`extensions.yolov3_loss`.

For logits ``t``: ``'darknet'`` (the paper) maps ``xy = sigmoid(t_xy)`` (offset from the cell corner, cells) and
``wh / anchor = exp(t_wh)`` (``t_wh`` clamped at :data:`MAX_LOG_WH`); ``'yolov5'`` maps ``xy = 2 sigmoid(t_xy) - 0.5``
and ``wh / anchor = (2 sigmoid(t_wh))**2``.
"""

from __future__ import annotations

import torch

DECODES = ("darknet", "yolov5")
MAX_LOG_WH = 10.0  # largest width/height logit of the darknet decode, so exp() stays finite


def decode_offsets(txy: torch.Tensor, twh: torch.Tensor, decode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (centre offset from the cell corner in cells, size / anchor) for logits of either decode.

    Args:
        txy, twh: (..., 2) raw logits.
        decode: ``'darknet'`` or ``'yolov5'``.

    Returns:
        ``xy`` (..., 2) in (0, 1) (darknet) or (-0.5, 1.5) (yolov5); ``wh_ratio`` (..., 2) = box size / anchor size.
    """
    if decode == "yolov5":
        return txy.sigmoid() * 2 - 0.5, (twh.sigmoid() * 2) ** 2
    return txy.sigmoid(), twh.clamp(max=MAX_LOG_WH).exp()
