"""YOLOv1 sum-squared loss (Redmon et al. 2016) for :class:`extensions.yolov1.YOLOv1Head`.

For each image, every ground-truth box is assigned to the cell containing its centre; a cell holds at most one
object (when several centres fall into one cell, the largest box is kept). Of the cell's ``B`` predicted boxes the
one with the highest IoU with the ground truth is *responsible* (ties go to the lower box index). With
``lambda_coord = 5`` and ``lambda_noobj = 0.5``, summed over the batch::

    box = lambda_coord * sum_resp [(x - x^)^2 + (y - y^)^2 + (sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
    obj = sum_resp (conf^ - target)^2 + lambda_noobj * sum_not_resp conf^2
    cls = sum_object_cells sum_c (p_c - p^_c)^2

``target`` is the (detached) IoU of the responsible box (paper) or 1 (``conf_target='one'``); "not responsible"
covers every predictor that is not responsible for an object, including the other boxes of an object cell (paper).
Square roots use ``sign(v) * sqrt(|v| + 1e-6)`` on predictions and targets alike, so a perfect prediction costs 0.
Coordinates follow the head's layout (x, y in cell units; w, h as image fractions).

Reduction: each term is summed over cells and boxes and divided by the batch size (a per-image sum). The
criterion returns ``((box + obj + cls) * batch_size, tensor([box, obj, cls]))`` like ``ComputeLoss``, so the
first value is the plain sum over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch
import torch.nn as nn

from utils.metrics import bbox_iou

SQRT_EPS = 1e-6


@dataclass
class CellTargets:
    """Ground truth assigned to cells: ``m`` object cells of the batch.

    Attributes:
        image, row, col: (m,) long indices of the object cells.
        xy: (m, 2) box centre offset inside the cell, cell units.
        wh: (m, 2) box size, fractions of the image.
        cls: (m,) long class indices.
    """

    image: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    xy: torch.Tensor
    wh: torch.Tensor
    cls: torch.Tensor


class YOLOv1Loss:
    """Callable YOLOv1 criterion: ``loss(preds, targets) -> (total * bs, tensor([box, obj, cls]))``.

    Args:
        head: a :class:`~extensions.yolov1.YOLOv1Head` (supplies ``S``, ``B``, ``nc`` and the lambdas).
        conf_target: ``'iou'`` (paper) or ``'one'``; defaults to the head's setting.
    """

    def __init__(self, head: nn.Module, conf_target: str | None = None):
        self.S, self.B, self.nc = head.S, head.B, head.nc
        self.lambda_coord, self.lambda_noobj = head.lambda_coord, head.lambda_noobj
        self.conf_target = conf_target or head.conf_target
        if self.conf_target not in ("iou", "one"):
            raise ValueError(f"YOLOv1 conf_target must be 'iou' or 'one', got {self.conf_target!r}")

    def __call__(self, preds: Union[torch.Tensor, Sequence[torch.Tensor]],
                 targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(total * bs, [box, obj, cls])`` for head output ``preds`` (N, S, S, B*5+C) and ``targets``.

        Args:
            preds: the training output of the head (a one-element list/tuple is accepted too).
            targets: (nt, 6) ``[image_index, class, x, y, w, h]``, xywh normalised to the image.
        """
        terms = self.terms(preds, targets)
        batch_size = _as_grid(preds).shape[0]
        total = terms["box"] + terms["obj"] + terms["cls"]
        return total * batch_size, torch.cat((terms["box"], terms["obj"], terms["cls"])).detach()

    def terms(self, preds: Any, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the per-image loss terms ``{'box', 'obj', 'cls'}`` (each shape (1,), summed then / batch size)."""
        grid = _as_grid(preds)
        batch_size = grid.shape[0]
        boxes = grid[..., :self.B * 5].reshape(batch_size, self.S, self.S, self.B, 5)
        cells = self.build_targets(targets.to(grid.device), batch_size)
        cell_boxes = boxes[cells.image, cells.row, cells.col]  # (m, B, 5)
        iou = self.box_ious(cell_boxes, cells)  # (m, B)
        resp = iou.argmax(1) if len(cells.image) else iou.new_zeros(0, dtype=torch.long)
        picked = cell_boxes[torch.arange(len(resp), device=grid.device), resp]  # (m, 5)
        xy_err = (picked[:, :2] - cells.xy).pow(2).sum()
        wh_err = (_signed_sqrt(picked[:, 2:4]) - _signed_sqrt(cells.wh)).pow(2).sum()
        if self.conf_target == "iou":
            conf_goal = iou.gather(1, resp[:, None]).squeeze(1).detach().clamp(0)
        else:
            conf_goal = torch.ones_like(picked[:, 4])
        obj_err = (picked[:, 4] - conf_goal).pow(2).sum()
        not_resp = torch.ones(boxes.shape[:4], dtype=torch.bool, device=grid.device)
        not_resp[cells.image, cells.row, cells.col, resp] = False
        noobj_err = boxes[..., 4][not_resp].pow(2).sum()
        class_scores = grid[..., self.B * 5:][cells.image, cells.row, cells.col]  # (m, C)
        one_hot = nn.functional.one_hot(cells.cls, self.nc).to(class_scores.dtype)
        cls_err = (class_scores - one_hot).pow(2).sum()
        scale = 1.0 / batch_size
        return {"box": (self.lambda_coord * (xy_err + wh_err) * scale).view(1),
                "obj": ((obj_err + self.lambda_noobj * noobj_err) * scale).view(1),
                "cls": (cls_err * scale).view(1)}

    def build_targets(self, targets: torch.Tensor, batch_size: int) -> CellTargets:
        """Assign each target to the cell holding its centre; keep the largest box of a cell (deterministic)."""
        image, cls = targets[:, 0].long(), targets[:, 1].long()
        grid_xy = targets[:, 2:4] * self.S
        cell = grid_xy.long().clamp(0, self.S - 1)  # (nt, 2) col, row
        key = (image * self.S + cell[:, 1]) * self.S + cell[:, 0]
        by_area = torch.argsort(targets[:, 4] * targets[:, 5], stable=True)
        order = by_area[torch.argsort(key[by_area], stable=True)]  # grouped by cell, ascending area inside a group
        sorted_key = key[order]
        last_of_cell = torch.ones_like(sorted_key, dtype=torch.bool)
        last_of_cell[:-1] = sorted_key[1:] != sorted_key[:-1]
        keep = order[last_of_cell]
        keep = keep[(image[keep] >= 0) & (image[keep] < batch_size)]
        return CellTargets(image[keep], cell[keep, 1], cell[keep, 0], grid_xy[keep] - cell[keep],
                           targets[keep, 4:6], cls[keep])

    def box_ious(self, cell_boxes: torch.Tensor, cells: CellTargets) -> torch.Tensor:
        """Return (m, B) IoUs between each cell's predicted boxes and its ground truth, in image-fraction units."""
        offset = torch.stack((cells.col, cells.row), 1).to(cell_boxes.dtype)  # (m, 2) x, y
        pred_xy = (cell_boxes[..., :2].detach() + offset[:, None]) / self.S
        pred = torch.cat((pred_xy, cell_boxes[..., 2:4].detach().clamp(min=0)), -1)  # (m, B, 4) xywh
        true = torch.cat(((cells.xy + offset) / self.S, cells.wh), -1)[:, None]  # (m, 1, 4) xywh
        return bbox_iou(pred, true, xywh=True).squeeze(-1)


def _signed_sqrt(values: torch.Tensor) -> torch.Tensor:
    return torch.sign(values) * torch.sqrt(values.abs() + SQRT_EPS)


def _as_grid(preds: Any) -> torch.Tensor:
    if isinstance(preds, (list, tuple)):
        if len(preds) != 1:
            raise ValueError(f"YOLOv1 loss expects one (N, S, S, B*5+C) tensor, got a sequence of {len(preds)}")
        preds = preds[0]
    if preds.dim() != 4:
        raise ValueError(f"YOLOv1 loss expects a (N, S, S, B*5+C) tensor, got shape {tuple(preds.shape)}")
    return preds
