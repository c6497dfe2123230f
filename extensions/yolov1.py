"""YOLOv1 detection head (Redmon et al. 2016) as a YAML module on any backbone.

Output layout. The head pools its input feature map to ``S x S`` cells (adaptive average pooling, so any backbone
stride and input size work) and predicts ``B`` boxes and one class vector per cell. The training output has shape
**(N, S, S, B*5 + C)**; along the last axis each cell holds::

    [x_1, y_1, w_1, h_1, conf_1, ..., x_B, y_B, w_B, h_B, conf_B, p_1, ..., p_C]

- ``x, y``: box centre offset inside the cell, in cell units (0 = cell's left/top edge, 1 = right/bottom edge);
- ``w, h``: box size as a fraction of the input image width / height;
- ``conf``: confidence, trained towards the IoU with the ground truth (paper) or 1 (``conf_target='one'``);
- ``p_c``: conditional class scores Pr(class | object), trained with squared error against the one-hot class.

Axis 1 of the output is the cell row (y) and axis 2 the cell column (x). With ``output='linear'`` (the paper) the
values are the raw outputs of the last layer; ``output='sigmoid'`` squashes all of them to (0, 1) (a
stabiliser).

Eval decode. In eval mode the head returns ``(decoded, raw)`` (``(decoded,)`` when ``export``) where ``decoded`` is
(N, S*S*B, 5 + C): rows ``[cx, cy, w, h, conf, p_1..p_C]`` with the box in input pixels (xywh), ordered by cell row,
cell column, then box. ``conf`` and the class scores are the raw outputs clipped to [0, 1] (no softmax: the paper
trains the class scores by regression and multiplies them by the confidence at test time, which
``non_max_suppression`` does). This is the same format as ``Detect``, so NMS, val.py, detect.py and export work
unchanged.

YAML rows (``c1`` comes from the ``from`` layer)::

    [-1, 1, YOLOv1Head, [nc, 7, 2, fc]]                                  # paper: FC 4096 + dropout 0.5
    [-1, 1, YOLOv1Head, [nc, {grid: 7, boxes: 2, variant: conv, hidden: 256, dropout: 0.0}]]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from extensions.darknet import DarknetConv
from extensions.head_args import head_constructor_args
from models.registry import BuildContext, add_module
from utils.checkpoint import register_safe_globals

VARIANTS = ("fc", "conv")
OUTPUTS = ("linear", "sigmoid")
CONF_TARGETS = ("iou", "one")


class YOLOv1Head(nn.Module):
    """YOLOv1 grid head; see the module docstring for the output layout and decode.

    Args:
        c1: input channels (from the YAML ``from`` layer).
        nc: number of classes ``C``.
        grid: cells per side ``S``.
        boxes: boxes per cell ``B``.
        variant: ``'fc'`` (flatten -> Linear(hidden) -> LeakyReLU 0.1 -> Dropout -> Linear(S*S*(B*5+C)), the paper)
            or ``'conv'`` (3x3 DarknetConv(hidden) -> Dropout -> 1x1 Conv2d(B*5+C) on the pooled map).
        hidden: width of the hidden layer (paper: 4096).
        dropout: dropout probability after the hidden layer (paper: 0.5).
        output: ``'linear'`` (paper) or ``'sigmoid'``.
        conf_target: loss confidence target, ``'iou'`` (paper) or ``'one'``.
        lambda_coord: weight of the box terms (paper: 5).
        lambda_noobj: weight of the no-object confidence term (paper: 0.5).
    """

    export = False
    dynamic = False

    def __init__(self, c1: int, nc: int = 20, grid: int = 7, boxes: int = 2, variant: str = "fc", hidden: int = 4096,
                 dropout: float = 0.5, output: str = "linear", conf_target: str = "iou", lambda_coord: float = 5.0,
                 lambda_noobj: float = 0.5):
        super().__init__()
        _check_choice("variant", variant, VARIANTS)
        _check_choice("output", output, OUTPUTS)
        _check_choice("conf_target", conf_target, CONF_TARGETS)
        self.nc, self.S, self.B = int(nc), int(grid), int(boxes)
        self.no = self.B * 5 + self.nc
        self.nl, self.na = 1, self.B
        self.variant, self.output, self.conf_target = variant, output, conf_target
        self.lambda_coord, self.lambda_noobj = float(lambda_coord), float(lambda_noobj)
        self.stride = torch.tensor([32.0])
        if variant == "fc":
            self.m = nn.Sequential(nn.Flatten(1), nn.Linear(c1 * self.S * self.S, hidden),
                                   nn.LeakyReLU(0.1, inplace=True), nn.Dropout(dropout),
                                   nn.Linear(hidden, self.S * self.S * self.no))
        else:
            self.m = nn.Sequential(DarknetConv(c1, hidden, 3), nn.Dropout(dropout), nn.Conv2d(hidden, self.no, 1))

    def forward(self, x: torch.Tensor):
        """Return the (N, S, S, B*5+C) grid in training, ``(decoded, grid)`` in eval (``(decoded,)`` if export)."""
        image_hw = (x.shape[2] * self.stride[0], x.shape[3] * self.stride[0])
        out = self.m(adaptive_avg_pool(x, self.S))
        out = out.view(-1, self.S, self.S, self.no) if self.variant == "fc" else out.permute(0, 2, 3, 1).contiguous()
        if self.output == "sigmoid":
            out = out.sigmoid()
        if self.training:
            return out
        decoded = decode_yolov1(out, self.B, image_hw)
        return (decoded,) if self.export else (decoded, out)

    def setup_model(self, model: nn.Module, ch: int) -> None:
        """Set ``stride`` (input pixels per backbone feature pixel) with a 256 px dry run; copy it to ``model``."""
        size = 256
        shapes: list[torch.Size] = []
        handle = self.register_forward_pre_hook(lambda module, inputs: shapes.append(inputs[0].shape))
        try:
            with torch.no_grad():
                model.forward(torch.zeros(1, ch, size, size))
        finally:
            handle.remove()
        self.stride = torch.tensor([size / shapes[-1][-2]])
        model.stride = self.stride

    def _apply_to_tensors(self, fn) -> None:
        """Apply a tensor function (``.to``, ``.half`` ...) to ``stride`` (a plain attribute, not a buffer)."""
        self.stride = fn(self.stride)

    def make_loss(self, model: nn.Module, hyp: Any = None):
        """Return the YOLOv1 criterion for this head (:class:`extensions.yolov1_loss.YOLOv1Loss`). ``hyp`` is accepted
        like every head's, and unused: the paper's loss has fixed weights (lambda_coord 5, lambda_noobj 0.5)."""
        from extensions.yolov1_loss import YOLOv1Loss

        return YOLOv1Loss(self)


def adaptive_avg_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Return ``nn.functional.adaptive_avg_pool2d(x, size)`` (N, C, size, size) computed as two matrix products.

    Same bins as PyTorch (cell i averages rows floor(i*H/size) .. ceil((i+1)*H/size) - 1), but exportable to ONNX
    for any input size (ONNX's adaptive pooling needs size to divide H and W).
    """
    rows = _pool_matrix(x.shape[-2], size, x)  # (size, H)
    cols = _pool_matrix(x.shape[-1], size, x)  # (size, W)
    return rows @ x @ cols.T


def _pool_matrix(length: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """Return the (size, length) averaging matrix of adaptive pooling from ``length`` to ``size`` bins."""
    index = torch.arange(size, device=like.device)
    start = torch.div(index * length, size, rounding_mode="floor")
    end = torch.div((index + 1) * length + size - 1, size, rounding_mode="floor")
    position = torch.arange(length, device=like.device)
    inside = (position[None] >= start[:, None]) & (position[None] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def decode_yolov1(out: torch.Tensor, boxes: int, image_hw: tuple[Any, Any]) -> torch.Tensor:
    """Decode a YOLOv1 grid to detection rows.

    Args:
        out: (N, S, S, B*5+C) head output (layout in the module docstring).
        boxes: ``B``.
        image_hw: input image (height, width) in pixels (numbers or 0-dim tensors).

    Returns:
        (N, S*S*B, 5+C) rows ``[cx, cy, w, h, conf, p_1..p_C]``: xywh in pixels, conf and class scores in [0, 1].
    """
    n, grid_h, grid_w, _ = out.shape
    box = out[..., :boxes * 5].view(n, grid_h, grid_w, boxes, 5)
    cls = out[..., boxes * 5:].clamp(0, 1).unsqueeze(3).expand(-1, -1, -1, boxes, -1)
    cols = torch.arange(grid_w, device=out.device, dtype=out.dtype).view(1, 1, grid_w, 1)
    rows = torch.arange(grid_h, device=out.device, dtype=out.dtype).view(1, grid_h, 1, 1)
    image_h, image_w = image_hw
    cx = (box[..., 0] + cols) * (image_w / grid_w)
    cy = (box[..., 1] + rows) * (image_h / grid_h)
    w = box[..., 2].clamp(min=0) * image_w
    h = box[..., 3].clamp(min=0) * image_h
    conf = box[..., 4].clamp(0, 1)
    rows_out = torch.cat((torch.stack((cx, cy, w, h, conf), -1), cls), -1)
    return rows_out.view(n, grid_h * grid_w * boxes, -1)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"YOLOv1Head: {name}={value!r} is not one of {choices}")


def _parse_yolov1(args: list, ch_in: list[int], ctx: BuildContext) -> tuple[list, int]:
    """Builder hook: YAML args (positional and/or an options mapping) -> constructor args; output width B*5+C."""
    args = head_constructor_args(YOLOv1Head, args, {"c1": ch_in[0]})
    _, nc, _, boxes = args[:4]
    return args, int(boxes) * 5 + int(nc)


add_module("YOLOv1Head", YOLOv1Head, role="custom", parse=_parse_yolov1)
register_safe_globals(YOLOv1Head)
