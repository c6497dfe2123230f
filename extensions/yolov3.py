"""YOLOv3 detection head (Redmon & Farhadi 2018) with a selectable box decode and loss, as a YAML module.

``YOLOv3Head`` is a :class:`models.yolo.Detect` (one 1x1 Conv2d per level, anchors in grid units, the same
attributes), so AutoAnchor, bias initialisation, export, fusing and checkpoints treat it like ``Detect``. Training
returns the raw per-level logits (bs, na, ny, nx, 5 + nc); eval returns ``(cat(decoded), raw)`` (``(decoded,)`` when
``export``) with decoded rows ``[cx, cy, w, h (input pixels), obj, cls...]`` (probabilities).

Decodes (``decode=``), for logits ``t``, cell ``c`` (integer column/row), stride ``s`` and anchor ``a`` (pixels):

- ``'darknet'`` (the paper): ``xy = (sigmoid(t_xy) + c) * s``, ``wh = exp(t_wh) * a`` (``t_wh`` clamped at
  :data:`MAX_LOG_WH` so the exponential stays finite);
- ``'yolov5'``: ``xy = (2 * sigmoid(t_xy) - 0.5 + c) * s``, ``wh = (2 * sigmoid(t_wh))**2 * a``.

Both give the cell centre and the anchor size at zero logits. Losses (``loss=``, or ``hyp['v3_loss']``): see
:mod:`extensions.yolov3_loss` (``'darknet'``, ``'ciou'``, ``'multi_anchor'``, ``'yolov5'``).

YAML rows (anchors as in Detect; an int gives that many anchors per level, to be fitted by AutoAnchor)::

    [[15, 22], 1, YOLOv3Head, [nc, anchors]]                                  # darknet decode + darknet loss
    [[15, 22], 1, YOLOv3Head, [nc, anchors, {decode: yolov5, loss: yolov5}]]
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from extensions.head_args import head_constructor_args
from extensions.yolov3_decode import DECODES, MAX_LOG_WH, decode_offsets
from extensions.yolov3_loss import LOSSES, make_yolov3_loss
from models.registry import BuildContext, add_module
from models.yolo import Detect
from utils.checkpoint import register_safe_globals
from utils.hyp import Hyp

__all__ = ["DECODES", "LOSSES", "MAX_LOG_WH", "YOLOv3Head", "decode_offsets"]


class YOLOv3Head(Detect):
    """Anchor-based multi-scale head with the darknet or YOLOv5 decode and a selectable loss.

    Args:
        nc: number of classes.
        anchors: per level ``[w0, h0, w1, h1, ...]`` in pixels (converted to grid units by ``setup_model``).
        ch: input channels per level (from the YAML ``from`` layers).
        decode: ``'darknet'`` or ``'yolov5'`` (module docstring).
        loss: ``'darknet'``, ``'ciou'``, ``'multi_anchor'`` or ``'yolov5'``; ``hyp['v3_loss']`` overrides it.
        ignore_thresh: predictions whose IoU with any ground truth exceeds this are left out of the no-object
            term (darknet / ciou / multi_anchor losses; paper 0.5, darknet cfg 0.7).
        anchor_iou_thresh: ``multi_anchor``: every anchor whose shape IoU with a ground truth exceeds this is a
            positive (the darknet rule uses 0.2).
        inplace: kept for ``Detect`` compatibility.
    """

    def __init__(self, nc: int = 80, anchors: Any = (), ch: tuple = (), decode: str = "darknet",
                 loss: str = "darknet", ignore_thresh: float = 0.5, anchor_iou_thresh: float = 0.2,
                 inplace: bool = True):
        super().__init__(nc, anchors, ch, inplace)
        if decode not in DECODES:
            raise ValueError(f"YOLOv3Head: decode={decode!r} is not one of {DECODES}")
        if loss not in LOSSES:
            raise ValueError(f"YOLOv3Head: loss={loss!r} is not one of {LOSSES}")
        self.decode, self.loss = decode, loss
        self.ignore_thresh, self.anchor_iou_thresh = float(ignore_thresh), float(anchor_iou_thresh)

    def _decode(self, xi: torch.Tensor, i: int) -> torch.Tensor:
        """Decode one level (bs, na, ny, nx, no) of logits to ``[xywh px, obj, cls...]``."""
        if self.decode == "yolov5":
            return super()._decode(xi, i)
        txy, twh, tconf = xi.split((2, 2, self.nc + 1), 4)
        xy = (txy.sigmoid() + self.grid[i] + 0.5) * self.stride[i]  # Detect's grid holds cell - 0.5
        wh = twh.clamp(max=MAX_LOG_WH).exp() * self.anchor_grid[i]
        return torch.cat((xy, wh, tconf.sigmoid()), 4)

    def make_loss(self, model: nn.Module, hyp: Hyp | Mapping | None = None):
        """Return the loss selected by ``hyp['v3_loss']`` or the head's ``loss`` (see extensions.yolov3_loss).

        ``hyp`` (gain-scaled, from the trainer) is used when given; otherwise ``model.hyp`` is read.
        """
        if hyp is None:
            hyp = dict(getattr(model, "hyp", None) or {})
        values = hyp.to_dict() if isinstance(hyp, Hyp) else hyp
        return make_yolov3_loss(model, self, values.get("v3_loss", self.loss), hyp)


def _parse_yolov3(args: list, ch_in: list[int], ctx: BuildContext) -> tuple[list, int]:
    """Builder hook: YAML args -> constructor args; int anchors expand to that many placeholders per level."""
    args = head_constructor_args(YOLOv3Head, args, {"ch": ch_in}, skip=("inplace",))
    if isinstance(args[1], int):
        args[1] = [list(range(args[1] * 2))] * len(ch_in)
    if len(args[1]) != len(ch_in):
        raise ValueError(f"YOLOv3Head: {len(args[1])} anchor levels for {len(ch_in)} input layers")
    return args, ch_in[0]


add_module("YOLOv3Head", YOLOv3Head, role="custom", parse=_parse_yolov3)
register_safe_globals(YOLOv3Head)
