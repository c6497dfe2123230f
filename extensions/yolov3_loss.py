"""YOLOv3 loss variants (darknet sums, CIoU, multi-anchor, YOLOv5) for :class:`extensions.yolov3.YOLOv3Head`.

Variants (head argument ``loss=`` or ``hyp['v3_loss']``, a name or its index in this list):

0. ``'darknet'``: one anchor per ground truth (:func:`~extensions.yolov3_assign.assign_best_anchor`); box loss
   ``sum (2 - w*h) * [(x - x^)^2 + (y - y^)^2 + (log w/a - log w^/a)^2 + (log h/a - log h^/a)^2]`` in the
   decode's parameter space (x, y = centre offset in the cell; w, h normalised to the image in the scale factor);
   BCE-with-logits objectness and classes; predictions whose decoded box has IoU > ``ignore_thresh`` with a ground
   truth of their image are left out of the no-object term.
1. ``'ciou'``: the same assignment with box loss ``sum (1 - CIoU)``.
2. ``'multi_anchor'`` (AlexeyAB): every anchor with shape IoU > ``anchor_iou_thresh`` (plus the best) is positive
   (:func:`~extensions.yolov3_assign.assign_multi_anchor`); ``sum (1 - CIoU)``, BCE obj/cls, ignore threshold.
3. ``'yolov5'``: YOLOv5's assignment and loss, delegated to :class:`utils.loss.ComputeLoss` (gains from ``hyp``;
   it assumes the ``yolov5`` decode).

Reduction for variants 0-2: every term is a **sum** over slots (the no-object BCE is summed over all non-ignored
slots, never averaged over them: averaging divides each negative's gradient by the huge negative count and the
objectness branch stops learning), divided by the batch size (per-image sums), then multiplied
by ``hyp['v3_box']``, ``hyp['v3_obj']``, ``hyp['v3_cls']`` (default 1). The criterion returns
``((box + obj + cls) * batch_size, tensor([box, obj, cls]))`` like ``ComputeLoss``.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from extensions.yolov3_assign import Positives, assign_best_anchor, assign_multi_anchor, build_candidates
from extensions.yolov3_decode import MAX_LOG_WH, decode_offsets
from utils.boxes import xywh2xyxy
from utils.hyp import Hyp
from utils.logging import LOGGER
from utils.loss import ComputeLoss
from utils.metrics import bbox_iou

LOSSES = ("darknet", "ciou", "multi_anchor", "yolov5")


def resolve_variant(variant: Union[str, int, float]) -> str:
    """Return the loss name for a name or an index into :data:`LOSSES`."""
    if isinstance(variant, (int, float)) and not isinstance(variant, bool) and int(variant) == variant:
        if 0 <= int(variant) < len(LOSSES):
            return LOSSES[int(variant)]
    elif variant in LOSSES:
        return str(variant)
    raise ValueError(f"YOLOv3 loss {variant!r} is not one of {LOSSES} (or an index 0-{len(LOSSES) - 1})")


def make_yolov3_loss(model: nn.Module, head: nn.Module, variant: Union[str, int], hyp: Hyp | Mapping):
    """Return the criterion ``variant`` for ``head``; ``'yolov5'`` gives ``utils.loss.ComputeLoss``.

    ``hyp`` (gain-scaled :class:`utils.hyp.Hyp` or dict) gives the ``v3_*`` gains and, for ``'yolov5'``, the
    ComputeLoss gains; an empty ``hyp`` lets ComputeLoss read ``model.hyp``.
    """
    variant = resolve_variant(variant)
    if variant == "yolov5":
        if head.decode != "yolov5":
            LOGGER.warning(f"WARNING ⚠️ YOLOv3Head: loss 'yolov5' assumes the yolov5 decode but the head decodes "
                           f"with {head.decode!r}; predictions at neighbour cells will not match training")
        return ComputeLoss(model, hyp=hyp or None)
    return YOLOv3Loss(head, variant, hyp)


class YOLOv3Loss:
    """Callable darknet-style YOLOv3 criterion: ``loss(p, targets) -> (total * bs, tensor([box, obj, cls]))``.

    Args:
        head: the :class:`~extensions.yolov3.YOLOv3Head` (anchors in grid units, strides, decode, thresholds).
        variant: ``'darknet'``, ``'ciou'`` or ``'multi_anchor'``.
        hyp: optional gains ``v3_box``, ``v3_obj``, ``v3_cls`` (default 1.0 each).
    """

    def __init__(self, head: nn.Module, variant: str = "darknet", hyp: Hyp | Mapping | None = None):
        if variant not in ("darknet", "ciou", "multi_anchor"):
            raise ValueError(f"YOLOv3Loss handles 'darknet', 'ciou' and 'multi_anchor', not {variant!r}")
        hyp = hyp.to_dict() if isinstance(hyp, Hyp) else dict(hyp or {})
        self.head, self.variant = head, variant
        self.gains = {name: float(hyp.get(f"v3_{name}", 1.0)) for name in ("box", "obj", "cls")}

    def __call__(self, p: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(total * bs, [box, obj, cls])`` for raw head outputs ``p`` (per level (bs, na, ny, nx, no))."""
        terms = self.terms(p, targets)
        total = terms["box"] + terms["obj"] + terms["cls"]
        return total * p[0].shape[0], torch.cat((terms["box"], terms["obj"], terms["cls"])).detach()

    def image_wh(self, p: list[torch.Tensor]) -> torch.Tensor:
        """Return the input (width, height) in pixels implied by the first level's grid and stride."""
        stride = float(self.head.stride[0])
        return torch.tensor([p[0].shape[3] * stride, p[0].shape[2] * stride], device=p[0].device)

    def assign(self, p: list[torch.Tensor], targets: torch.Tensor) -> Positives:
        """Return the positive slots of this variant for ``targets`` (nt, 6) normalised."""
        anchors_px = self.head.anchors.to(p[0].device) * self.head.stride.to(p[0].device).view(-1, 1, 1)
        shapes = [(pi.shape[2], pi.shape[3]) for pi in p]
        cand = build_candidates(targets.to(p[0].device).float(), anchors_px.float(), shapes, p[0].shape[0],
                                self.image_wh(p))
        if self.variant == "multi_anchor":
            return assign_multi_anchor(cand, self.head.anchor_iou_thresh)
        return assign_best_anchor(cand)

    def terms(self, p: list[torch.Tensor], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the gain-scaled per-image terms ``{'box', 'obj', 'cls'}`` (each shape (1,))."""
        targets = targets.to(p[0].device).float()
        batch_size = p[0].shape[0]
        positives = self.assign(p, targets)
        ignored = self.ignore_masks(p, targets)
        sums = {name: p[0].new_zeros(()) for name in ("box", "obj", "cls")}
        for level, pi in enumerate(p):
            index, rows = positives.on_level(level)
            obj_target = torch.zeros_like(pi[..., 4])
            obj_weight = (~ignored[level]).to(pi.dtype)
            obj_target[index] = 1.0
            obj_weight[index] = 1.0
            sums["obj"] = sums["obj"] + (F.binary_cross_entropy_with_logits(pi[..., 4], obj_target, reduction="none")
                                         * obj_weight).sum()
            if rows.numel():
                slot = pi[index]  # (n, no)
                sums["box"] = sums["box"] + self.box_term(slot, targets[rows], index, level, pi.shape[2:4])
                one_hot = F.one_hot(targets[rows, 1].long(), self.head.nc).to(slot.dtype)
                sums["cls"] = sums["cls"] + F.binary_cross_entropy_with_logits(slot[:, 5:], one_hot, reduction="sum")
        return {name: (value * self.gains[name] / batch_size).view(1) for name, value in sums.items()}

    def box_term(self, slot: torch.Tensor, targets: torch.Tensor, index: tuple[torch.Tensor, ...], level: int,
                 grid_hw: Any) -> torch.Tensor:
        """Return the summed box loss of one level's positives.

        Args:
            slot: (n, no) logits at the positive slots. targets: (n, 6) their ground truths (normalised).
            index: ``(image, anchor, gy, gx)`` of the slots. level: level index. grid_hw: (ny, nx) of the level.
        """
        ny, nx = int(grid_hw[0]), int(grid_hw[1])
        grid_size = torch.tensor([nx, ny], device=slot.device, dtype=slot.dtype)
        cell = torch.stack((index[3], index[2]), 1).to(slot.dtype)
        true_xy = targets[:, 2:4] * grid_size - cell  # offset from the cell corner, cells
        true_wh = targets[:, 4:6] * grid_size  # cells
        anchor = self.head.anchors[level].to(slot.device)[index[1]]  # (n, 2) cells
        pred_xy, pred_ratio = decode_offsets(slot[:, :2], slot[:, 2:4], self.head.decode)
        if self.variant == "darknet":
            scale = 2.0 - targets[:, 4] * targets[:, 5]
            xy_err = (pred_xy - true_xy).pow(2).sum(1)
            wh_err = (_log_ratio(slot[:, 2:4], self.head.decode) - torch.log(true_wh / anchor)).pow(2).sum(1)
            return (scale * (xy_err + wh_err)).sum()
        pred_box = torch.cat((pred_xy, pred_ratio * anchor), 1)
        ciou = bbox_iou(pred_box, torch.cat((true_xy, true_wh), 1), xywh=True, CIoU=True).view(-1)
        return (1.0 - ciou).sum()

    def ignore_masks(self, p: list[torch.Tensor], targets: torch.Tensor) -> list[torch.Tensor]:
        """Return per level (bs, na, ny, nx) bool: decoded box IoU > ``ignore_thresh`` with a ground truth."""
        batch_size = p[0].shape[0]
        gt_xyxy = _padded_gt_boxes(targets, batch_size, self.image_wh(p))  # (bs, T, 4) px
        masks = []
        for level, pi in enumerate(p):
            if gt_xyxy.shape[1] == 0:
                masks.append(torch.zeros(pi.shape[:4], dtype=torch.bool, device=pi.device))
                continue
            boxes = self.decoded_boxes(pi.detach(), level).view(batch_size, -1, 1, 4)
            iou = bbox_iou(boxes, gt_xyxy[:, None], xywh=False).squeeze(-1)  # (bs, slots, T)
            masks.append((iou.max(-1).values > self.head.ignore_thresh).view(pi.shape[:4]))
        return masks

    def decoded_boxes(self, pi: torch.Tensor, level: int) -> torch.Tensor:
        """Return (bs, na, ny, nx, 4) xyxy pixel boxes of one level's logits, decoded with the head's decode."""
        _, na, ny, nx, _ = pi.shape
        stride = float(self.head.stride[level])
        ys, xs = torch.meshgrid(torch.arange(ny, device=pi.device), torch.arange(nx, device=pi.device), indexing="ij")
        cell = torch.stack((xs, ys), -1).to(pi.dtype).view(1, 1, ny, nx, 2)
        anchor = self.head.anchors[level].to(pi.device, pi.dtype).view(1, na, 1, 1, 2)
        offset, ratio = decode_offsets(pi[..., :2], pi[..., 2:4], self.head.decode)
        return xywh2xyxy(torch.cat(((offset + cell) * stride, ratio * anchor * stride), -1))


def _log_ratio(twh: torch.Tensor, decode: str) -> torch.Tensor:
    """Return log(predicted size / anchor) for raw size logits: ``t`` (darknet) or ``2 log(2 sigmoid t)``."""
    if decode == "yolov5":
        return 2.0 * (F.logsigmoid(twh) + torch.log(torch.tensor(2.0, device=twh.device, dtype=twh.dtype)))
    return twh.clamp(max=MAX_LOG_WH)


def _padded_gt_boxes(targets: torch.Tensor, batch_size: int, image_wh: torch.Tensor) -> torch.Tensor:
    """Return (bs, T, 4) xyxy pixel ground truths per image, zero-padded (zero boxes have IoU 0 with anything)."""
    image = targets[:, 0].long()
    counts = torch.bincount(image, minlength=batch_size)[:batch_size]
    width = int(counts.max()) if counts.numel() else 0
    out = torch.zeros(batch_size, width, 4, device=targets.device, dtype=targets.dtype)
    if targets.shape[0] == 0:
        return out
    order = torch.argsort(image, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(len(order), device=targets.device) - starts[image[order]]
    scale = torch.cat((image_wh, image_wh)).to(targets.dtype)
    out[image[order], position] = xywh2xyxy(targets[order, 2:6]) * scale
    return out
