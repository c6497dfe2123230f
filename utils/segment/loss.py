"""YOLOv5 segmentation loss (upstream ``utils/segment/loss.py`` ``ComputeLoss`` semantics).

The detection terms (box CIoU, objectness, class) are :class:`utils.loss.YoloLoss`'s. The mask term: for each
positive (anchor, cell) the predicted mask logits are ``coefficients @ prototypes`` of its image; the BCE against
its target's ground-truth mask on the prototype grid is zeroed outside the target's box, averaged over the whole
grid and divided by the box's normalised area; positives are averaged per (level, image) and those means summed.
Gains: ``lbox *= box``, ``lobj *= obj``, ``lcls *= cls``, ``lseg *= box / batch_size``.

Inputs: ``preds = (levels, protos)`` with levels[i] (bs, na, ny, nx, 5 + nc + nm) raw and protos (bs, nm, mh, mw);
``targets`` (nt, 6) ``[image, cls, x, y, w, h]`` normalised, sorted by image (as the loaders collate them);
``masks``: with ``overlap`` (bs, h, w) index images (pixel k = the k-th target of that image, 1-based; 0 =
background), else (nt, h, w) one 0/1 mask per target row; resized (nearest) to the prototype grid if needed.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.boxes import xywh2xyxy
from utils.hyp import Hyp
from utils.loss import Assignment, YoloLoss, loss_setup
from utils.mask_ops import box_region

__all__ = ["ComputeLoss", "SegmentLoss", "per_image_rank"]


def per_image_rank(image_index: torch.Tensor) -> torch.Tensor:
    """Return (nt,) the 1-based rank of each target among the targets of its image, in row order."""
    nt = image_index.shape[0]
    if not nt:
        return image_index.new_zeros(0, dtype=torch.long)
    image = image_index.long()
    order = torch.argsort(image, stable=True)
    sorted_image = image[order]
    first = torch.ones_like(sorted_image, dtype=torch.bool)
    first[1:] = sorted_image[1:] != sorted_image[:-1]
    position = torch.arange(nt, device=image.device)
    group_start = torch.cummax(torch.where(first, position, 0), 0).values
    rank = torch.empty_like(position)
    rank[order] = position - group_start + 1
    return rank


class SegmentLoss(YoloLoss):
    """Detection loss plus the per-instance mask loss (module docstring); ``overlap`` selects the mask format."""

    def __init__(self, hyp: dict, anchors: torch.Tensor, nc: int, strides: Sequence[float] | torch.Tensor,
                 nm: int = 32, overlap: bool = True, autobalance: bool = False) -> None:
        super().__init__(hyp, anchors, nc, strides, autobalance)
        self.nm = nm
        self.overlap = overlap

    def __call__(self, preds: tuple, targets: torch.Tensor,
                 masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``((box + seg + obj + cls) * bs, tensor([box, seg, obj, cls]))``."""
        p, protos = preds
        bs = p[0].shape[0]
        ids = per_image_rank(targets[:, 0]) if self.overlap else None
        assignment = self.assign(p, targets, ids)
        terms, positives = self.detection_terms(p, assignment)
        seg = self.mask_term(positives, assignment, protos, masks) * (float(self.hyp["box"]) / bs)
        total = terms["box"] + seg + terms["obj"] + terms["cls"]
        return total * bs, torch.cat((terms["box"], seg, terms["obj"], terms["cls"])).detach()

    def mask_term(self, positives: list[torch.Tensor], assignment: Assignment, protos: torch.Tensor,
                  masks: torch.Tensor) -> torch.Tensor:
        """Sum over (level, image) of the mean per-positive cropped, area-normalised mask BCE; shape (1,)."""
        bs, nm, mh, mw = protos.shape
        masks = masks.to(self.device).float()
        if tuple(masks.shape[-2:]) != (mh, mw):
            masks = F.interpolate(masks[None], (mh, mw), mode="nearest")[0]
        coefficients = torch.cat([rows[:, rows.shape[1] - self.nm:] for rows in positives])
        if not coefficients.shape[0]:
            return torch.zeros(1, device=self.device) + 0.0 * protos.float().sum()
        image = torch.cat([index[0] for index in assignment.indices])
        level = torch.cat([torch.full_like(index[0], i) for i, index in enumerate(assignment.indices)])
        ids = torch.cat(assignment.ids)
        xywhn = torch.cat(assignment.xywhn)
        area = xywhn[:, 2:].prod(1)
        boxes = xywh2xyxy(xywhn * xywhn.new_tensor([mw, mh, mw, mh]))
        per_positive = torch.zeros(coefficients.shape[0], device=self.device)
        protos = protos.float()
        for b in image.unique().tolist():
            j = (image == b).nonzero().flatten()
            logits = (coefficients[j] @ protos[b].reshape(nm, -1)).view(-1, mh, mw)
            target = (masks[b][None] == ids[j].view(-1, 1, 1)).float() if self.overlap else masks[ids[j]]
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            inside = box_region(boxes[j], mh, mw)
            per_positive[j] = (bce * inside).mean(dim=(1, 2)) / area[j]
        return self._mean_per_group(per_positive, level * bs + image, len(positives) * bs).sum().view(1)

    def _mean_per_group(self, values: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
        """Mean of ``values`` (n,) within each group id in [0, groups); empty groups give 0; returns (groups,)."""
        sums = torch.zeros(groups, device=values.device).index_add(0, group, values)
        counts = torch.zeros(groups, device=values.device).index_add(0, group, torch.ones_like(values))
        return sums / counts.clamp(min=1)


class ComputeLoss(SegmentLoss):
    """Upstream-compatible ``ComputeLoss(model, autobalance=False, overlap=False)`` for a ``Segment`` head.

    ``hyp`` (a :class:`utils.hyp.Hyp` or dict, already gain-scaled) gives the gains; without it ``model.hyp`` is
    read, as upstream does.
    """

    def __init__(self, model: nn.Module, autobalance: bool = False, overlap: bool = False,
                 hyp: Hyp | Mapping | None = None) -> None:
        hyp, head, device = loss_setup(model, hyp, "segment/train.py")
        if not hasattr(head, "nm"):
            raise TypeError(f"utils.segment.loss.ComputeLoss needs a model with a Segment head, got "
                            f"{type(head).__name__}; use utils.loss.ComputeLoss for detection")
        super().__init__(hyp, head.anchors.to(device), head.nc, head.stride, nm=head.nm, overlap=overlap,
                         autobalance=autobalance)
