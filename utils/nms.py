"""Non-maximum suppression for YOLOv5 head outputs.

``non_max_suppression`` keeps upstream YOLOv5's interface and per-image semantics but has **no time limit**: it
always returns complete results. It is fast because

* candidate selection and scoring run once for the whole batch (one mask, one gather, one score product);
* per-class separation uses float64 coordinate offsets, so IoUs are exact to float32 input precision (upstream's
  float32 ``cls * 7680`` offsets round coordinates to 1/16 px for high class ids);
* greedy NMS is prefix-consistent (whether the box at sorted position ``p`` survives depends only on positions
  ``< p``), so only a sorted prefix long enough to yield ``max_det`` survivors is suppressed. The result is
  identical to suppressing all candidates and truncating afterwards.

One greedy NMS call is made per image: the CPU kernel's cost grows with (survivors x candidates), so a single call
over the concatenated batch would be ``batch_size`` times slower than separate calls.

Ties in confidence are ordered exactly as upstream's ``argsort(descending=True)`` of the per-image confidence
vector, so outputs match upstream box for box.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence, Union

import torch

from utils.boxes import xywh2xyxy

MAX_WH = 7680  # upstream's maximum box width/height in pixels (kept for reference and API compatibility)
MAX_NMS = 30000  # maximum candidates per image passed to NMS, after sorting by confidence
NmsFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Return areas (n,) of xyxy boxes (n, 4), computed exactly as torchvision's NMS kernel does."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _pairwise_suppression(rows: torch.Tensor, cols: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Return bool (n, m): IoU(rows[i], cols[j]) > iou_threshold, for xyxy boxes (n, 4) and (m, 4).

    Uses the kernel's formula ``inter / (area_i + area_j - inter)`` without eps; a NaN IoU (two empty boxes) never
    suppresses.
    """
    top_left = torch.maximum(rows[:, None, :2], cols[None, :, :2])
    bottom_right = torch.minimum(rows[:, None, 2:], cols[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (_box_area(rows)[:, None] + _box_area(cols)[None, :] - inter)
    return iou > iou_threshold


def _greedy_block(suppress: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Solve greedy NMS inside one score-sorted block.

    Args:
        suppress: bool (n, n), ``suppress[i, j]`` = box i would suppress box j (only i < j is used).
        alive: bool (n,), boxes not already suppressed by earlier blocks.

    Returns:
        bool (n,) survivors. Iterates ``keep[j] = alive[j] and no kept i < j suppresses j`` to its unique fixed
        point; after t rounds the first t entries are final, so it always terminates with the greedy answer.
    """
    suppress = torch.triu(suppress, diagonal=1)
    keep = alive.clone()
    while True:
        suppressed = (suppress & keep[:, None]).any(0)
        new_keep = alive & ~suppressed
        if torch.equal(new_keep, keep):
            return keep
        keep = new_keep


def nms_torch(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, block_size: int = 128) -> torch.Tensor:
    """Pure-torch greedy NMS, a drop-in for ``torchvision.ops.nms`` (used only when that op is unavailable).

    Args:
        boxes: (n, 4) xyxy, any units; the IoU formula and comparison (``IoU > iou_threshold``) match torchvision.
        scores: (n,) scores; ties keep input order (stable sort), as torchvision's CPU kernel does.
        iou_threshold: boxes overlapping a kept, higher-scored box by more than this are discarded.
        block_size: boxes are processed in score-sorted blocks of this size to bound memory (block x kept).

    Returns:
        int64 (k,) indices of kept boxes, in decreasing score order.
    """
    order = scores.argsort(descending=True, stable=True)
    sorted_boxes = boxes[order]
    kept_positions = []
    kept_boxes = sorted_boxes[:0]
    for start in range(0, len(order), block_size):
        block = sorted_boxes[start:start + block_size]
        alive = ~_pairwise_suppression(kept_boxes, block, iou_threshold).any(0)
        keep = _greedy_block(_pairwise_suppression(block, block, iou_threshold), alive)
        kept_positions.append(keep.nonzero().flatten() + start)
        kept_boxes = torch.cat((kept_boxes, block[keep]))
    positions = torch.cat(kept_positions) if kept_positions else order[:0]
    return order[positions]


@functools.cache
def _torchvision_nms() -> NmsFn | None:
    """Return ``torchvision.ops.nms`` if its compiled op loads and runs here, else None (checked once, lazily)."""
    try:
        from torchvision.ops import nms as tv_nms

        tv_nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except (ImportError, RuntimeError, OSError, AttributeError):
        return None
    return tv_nms


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS on xyxy boxes (n, 4) with scores (n,); returns kept indices (k,) by decreasing score.

    Dispatches to ``torchvision.ops.nms`` when its compiled op is available, else to ``nms_torch`` (same results).
    """
    tv_nms = _torchvision_nms()
    return tv_nms(boxes, scores, iou_threshold) if tv_nms is not None else nms_torch(boxes, scores, iou_threshold)


def _check_thresholds(conf_thres: float, iou_thres: float) -> None:
    """Raise AssertionError (upstream's exception type, also under ``python -O``) unless both lie in [0, 1]."""
    if not 0 <= conf_thres <= 1:
        raise AssertionError(f"Invalid Confidence threshold {conf_thres}, valid values are between 0.0 and 1.0")
    if not 0 <= iou_thres <= 1:
        raise AssertionError(f"Invalid IoU {iou_thres}, valid values are between 0.0 and 1.0")


def _label_rows(labels: Sequence[torch.Tensor], nc: int, prediction: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Turn apriori labels into prediction-like rows with objectness and class score 1.

    Args:
        labels: per image, (n_i, 5) ``[cls, x, y, w, h]`` (xywh, pixels); may be empty.
        nc: number of classes; label classes must lie in [0, nc).
        prediction: the (B, N, 5 + nc + nm) head output, for row width, dtype and device.

    Returns:
        rows (L, 5 + nc + nm) and their image indices (L,), in image order.
    """
    rows, image_index, width = [], [], prediction.shape[2]
    for index, image_labels in enumerate(labels):
        if image_labels is None or not len(image_labels):
            continue
        image_labels = torch.as_tensor(image_labels, dtype=prediction.dtype, device=prediction.device)
        bad = (image_labels[:, 0] < 0) | (image_labels[:, 0] >= nc)
        if bad.any():
            raise ValueError(f"non_max_suppression: labels[{index}] has class {image_labels[bad, 0][0].item():g} "
                             f"outside [0, {nc}) (rows are [cls, x, y, w, h])")
        row = torch.zeros((len(image_labels), width), dtype=prediction.dtype, device=prediction.device)
        row[:, :4] = image_labels[:, 1:5]
        row[:, 4] = 1.0
        row[torch.arange(len(image_labels), device=row.device), image_labels[:, 0].long() + 5] = 1.0
        rows.append(row)
        image_index.append(torch.full((len(row),), index, dtype=torch.long, device=row.device))
    if not rows:
        return prediction.new_zeros((0, width)), torch.zeros(0, dtype=torch.long, device=prediction.device)
    return torch.cat(rows), torch.cat(image_index)


def _gather_rows(prediction: torch.Tensor, conf_thres: float, labels: Sequence,
                 nc: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Select rows with objectness > conf_thres for the whole batch, plus apriori label rows.

    Args:
        prediction: (B, N, 5 + nc + nm) head output, xywh pixels, obj at column 4.
        conf_thres: objectness threshold. labels: see ``_label_rows``. nc: number of classes.

    Returns:
        rows (K, 5 + nc + nm) grouped by image (each image's candidates in anchor order, then its labels) and
        their image indices (K,).
    """
    batch_size = prediction.shape[0]
    candidate_mask = prediction[..., 4] > conf_thres  # NaN objectness compares False
    rows = prediction[candidate_mask]
    image_index = torch.arange(batch_size, device=prediction.device).repeat_interleave(candidate_mask.sum(1))
    if labels is not None and len(labels):
        extra_rows, extra_index = _label_rows(labels, nc, prediction)
        if len(extra_rows):
            image_index = torch.cat((image_index, extra_index))
            order = image_index.argsort(stable=True)
            rows, image_index = torch.cat((rows, extra_rows))[order], image_index[order]
    return rows, image_index


class _Candidates(NamedTuple):
    """Scored candidates of a batch; per-candidate fields are grouped by image.

    boxes (K, 4) xyxy and masks (K, nm) are per gathered row; row (D,), cls (D,) int64, conf (D,) and image (D,)
    are per candidate (one per row, or one per (row, class) pair in multi-label mode).
    """

    boxes: torch.Tensor
    masks: torch.Tensor
    row: torch.Tensor
    cls: torch.Tensor
    conf: torch.Tensor
    image: torch.Tensor


def _score_rows(rows: torch.Tensor, image_index: torch.Tensor, nc: int, conf_thres: float, multi_label: bool,
                classes: Sequence[int] | None) -> _Candidates:
    """Score gathered rows (K, 5 + nc + nm) with conf = cls x obj and keep candidates above ``conf_thres``.

    Multi-label mode yields one candidate per (row, class) pair above the threshold, in row-major order; otherwise
    one per row with its best class. Candidates with a non-finite box or score, or outside ``classes``, are dropped.
    """
    scores = rows[:, 5:5 + nc] * rows[:, 4:5]
    boxes = xywh2xyxy(rows[:, :4])
    if multi_label:
        row, cls = (scores > conf_thres).nonzero(as_tuple=True)
        conf = scores[row, cls]
    else:
        conf, cls = scores.max(1)
        row = (conf > conf_thres).nonzero().flatten()
        conf, cls = conf[row], cls[row]
    keep = torch.isfinite(boxes).all(1)[row] & torch.isfinite(conf)
    if classes is not None:
        keep &= torch.isin(cls, torch.as_tensor(classes, device=cls.device).long())
    row, cls, conf = row[keep], cls[keep], conf[keep]
    masks = rows[:, 5 + nc:]
    if masks.shape[1]:  # upstream multiplies every column from 5 on, mask coefficients included, by objectness
        masks = masks * rows[:, 4:5]
    return _Candidates(boxes, masks, row, cls, conf, image_index[row])


def _offset_boxes(boxes: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
    """Return float64 xyxy boxes (n, 4), shifted per class (unless ``cls`` is None) so classes never overlap.

    Shifts are multiples of the coordinate extent + 1, applied in float64, which holds float32 coordinates plus
    the shift exactly: IoUs within a class are unchanged (upstream's float32 ``cls * 7680`` shift is not exact).
    """
    boxes = boxes.double()
    if cls is None or not len(boxes):
        return boxes
    extent = (boxes.max() - boxes.min()).item() + 1.0
    return boxes + cls.double()[:, None] * extent


def _suppress_sorted(boxes: torch.Tensor, cls: torch.Tensor | None, iou_thres: float, max_det: int) -> torch.Tensor:
    """Greedy NMS on xyxy boxes (n, 4) sorted by decreasing confidence; returns kept positions (<= max_det,).

    Suppresses only a sorted prefix, growing it (at least 2x, or to 1.25x the length the survivor rate so far
    predicts) until it yields ``max_det`` survivors or covers everything; by prefix consistency this equals
    suppressing everything and keeping the first ``max_det``. ``cls`` (n,) separates classes; None is agnostic.
    """
    prefix = min(len(boxes), max(2 * max_det, 256))
    while True:
        shifted = _offset_boxes(boxes[:prefix], None if cls is None else cls[:prefix])
        ranks = -torch.arange(prefix, device=boxes.device, dtype=shifted.dtype)  # strictly decreasing: keeps order
        keep = nms(shifted, ranks, iou_thres)
        if len(keep) >= max_det or prefix >= len(boxes):
            return keep[:max_det]
        predicted = int(1.25 * prefix * max_det / max(len(keep), 1))
        prefix = min(len(boxes), max(2 * prefix, predicted))


def _suppress_image(found: _Candidates, select: slice, iou_thres: float, agnostic: bool,
                    max_det: int) -> torch.Tensor:
    """Run NMS on one image's candidates ``found.*[select]``; returns (n, 6 + nm) detections.

    Candidates are sorted by decreasing conf with upstream's (unstable) ``argsort`` of the same vector, so ties
    resolve identically; only the first ``MAX_NMS`` enter NMS.
    """
    row, cls, conf = found.row[select], found.cls[select], found.conf[select]
    order = conf.argsort(descending=True)[:MAX_NMS]
    kept = order[_suppress_sorted(found.boxes[row[order]], None if agnostic else cls[order], iou_thres, max_det)]
    row = row[kept]
    return torch.cat((found.boxes[row], conf[kept, None], cls[kept, None].to(conf.dtype), found.masks[row]), 1)


def non_max_suppression(prediction: Union[torch.Tensor, Sequence[torch.Tensor]], conf_thres: float = 0.25,
                        iou_thres: float = 0.45, classes: Sequence[int] | None = None, agnostic: bool = False,
                        multi_label: bool = False, labels: Sequence = (), max_det: int = 300,
                        nm: int = 0) -> list[torch.Tensor]:
    """Filter raw YOLOv5 head output to final detections per image (upstream-compatible, no time limit).

    Args:
        prediction: (B, N, 5 + nc + nm) ``[x, y, w, h, obj, cls_0..cls_{nc-1}, mask_0..]`` (xywh, pixels); a
            tuple/list (eval-mode ``(inference, raw)``) uses its first element.
        conf_thres: keep objectness and cls x obj scores strictly above this, in [0, 1].
        iou_thres: suppress boxes whose IoU with a kept box of the same class (any class if agnostic) exceeds
            this, in [0, 1].
        classes: keep only these class ids (None keeps all).
        agnostic: suppress across classes.
        multi_label: a box may yield one detection per class above ``conf_thres`` (ignored when nc == 1).
        labels: apriori labels per image, (n_i, 5) ``[cls, x, y, w, h]`` (xywh, pixels), added with conf 1.
        max_det: maximum detections per image.
        nm: number of mask coefficients at the end of each row. As upstream, they come out multiplied by the row's
            objectness (upstream scales all columns from 5 on by it); ``utils.mask_ops.process_mask`` expects that.

    Returns:
        list of B tensors (n_i, 6 + nm) ``[x1, y1, x2, y2, conf, cls, masks...]`` (xyxy, pixels), sorted by
        decreasing conf, on the input's device and dtype. Rows with NaN/inf box or score are dropped.
    """
    _check_thresholds(conf_thres, iou_thres)
    if isinstance(prediction, (list, tuple)):
        prediction = prediction[0]
    device = prediction.device
    if device.type == "mps":  # several index ops used here are unsupported or slow on MPS
        prediction = prediction.cpu()
    nc = prediction.shape[2] - nm - 5
    rows, image_index = _gather_rows(prediction, conf_thres, labels, nc)
    found = _score_rows(rows, image_index, nc, conf_thres, multi_label and nc > 1, classes)
    ends = torch.bincount(found.image, minlength=prediction.shape[0]).cumsum(0).tolist()
    output = []
    for start, end in zip([0] + ends[:-1], ends, strict=True):
        if end > start:
            output.append(_suppress_image(found, slice(start, end), iou_thres, agnostic, max_det).to(device))
        else:
            output.append(torch.zeros((0, 6 + nm), dtype=prediction.dtype, device=device))
    return output
