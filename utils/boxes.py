"""Pure box and segment geometry: format conversions, clipping and scaling, and the IoU family (``box_iou``,
``bbox_iou`` with GIoU/DIoU/CIoU, ``bbox_ioa``, ``wh_iou``).

Formats in names: ``xyxy`` = corners (x1, y1, x2, y2); ``xywh`` = centre x, centre y, width, height; a trailing
``n`` means normalised to [0, 1] by the image width/height. Every function accepts a ``torch.Tensor`` or a
``numpy.ndarray`` of shape (..., 4) and returns the same kind. Conversions never modify their input; the
``clip_*``/``scale_*`` functions keep upstream's in-place contract (documented on each).
"""

from __future__ import annotations

import math
from typing import Sequence, TypeVar, Union

import numpy as np
import torch

Array = TypeVar("Array", torch.Tensor, np.ndarray)
Shape = Union[Sequence[int], torch.Size]


def _empty_like(x: Array) -> Array:
    return x.clone() if isinstance(x, torch.Tensor) else np.copy(x)


def xyxy2xywh(x: Array) -> Array:
    """Convert boxes (..., 4) from corners to centre/size; units unchanged."""
    y = _empty_like(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def xywh2xyxy(x: Array) -> Array:
    """Convert boxes (..., 4) from centre/size to corners; units unchanged."""
    y = _empty_like(x)
    half_w, half_h = x[..., 2] / 2, x[..., 3] / 2
    y[..., 0] = x[..., 0] - half_w
    y[..., 1] = x[..., 1] - half_h
    y[..., 2] = x[..., 0] + half_w
    y[..., 3] = x[..., 1] + half_h
    return y


def xywhn2xyxy(x: Array, w: int = 640, h: int = 640, padw: float = 0, padh: float = 0) -> Array:
    """Convert normalised centre/size boxes (..., 4) to pixel corners in a (h, w) image offset by (padw, padh)."""
    y = _empty_like(x)
    y[..., 0] = w * (x[..., 0] - x[..., 2] / 2) + padw
    y[..., 1] = h * (x[..., 1] - x[..., 3] / 2) + padh
    y[..., 2] = w * (x[..., 0] + x[..., 2] / 2) + padw
    y[..., 3] = h * (x[..., 1] + x[..., 3] / 2) + padh
    return y


def xyxy2xywhn(x: Array, w: int = 640, h: int = 640, clip: bool = False, eps: float = 0.0) -> Array:
    """Convert pixel corner boxes (..., 4) to normalised centre/size; ``clip`` first clips to [0, w-eps]x[0, h-eps]."""
    if clip:
        x = _empty_like(x)
        clip_boxes(x, (h - eps, w - eps))
    y = _empty_like(x)
    y[..., 0] = ((x[..., 0] + x[..., 2]) / 2) / w
    y[..., 1] = ((x[..., 1] + x[..., 3]) / 2) / h
    y[..., 2] = (x[..., 2] - x[..., 0]) / w
    y[..., 3] = (x[..., 3] - x[..., 1]) / h
    return y


def xyn2xy(x: Array, w: int = 640, h: int = 640, padw: float = 0, padh: float = 0) -> Array:
    """Convert normalised points (n, 2) to pixels in a (h, w) image offset by (padw, padh)."""
    y = _empty_like(x)
    y[..., 0] = w * x[..., 0] + padw
    y[..., 1] = h * x[..., 1] + padh
    return y


def segment2box(segment: np.ndarray, width: int = 640, height: int = 640) -> np.ndarray:
    """Return the xyxy box (4,) of the points of one segment (n, 2) that lie inside the (height, width) image."""
    x, y = segment.T
    inside = (x >= 0) & (y >= 0) & (x <= width) & (y <= height)
    x, y = x[inside], y[inside]
    if not len(x):
        return np.zeros(4, dtype=np.float32)
    return np.array([x.min(), y.min(), x.max(), y.max()], dtype=np.float32)


def segments2boxes(segments: Sequence[np.ndarray]) -> np.ndarray:
    """Return (n, 4) xywh boxes bounding each segment (n_i, 2); units as the segments."""
    boxes = np.array([[s[:, 0].min(), s[:, 1].min(), s[:, 0].max(), s[:, 1].max()] for s in segments],
                     dtype=np.float32).reshape(-1, 4)
    return xyxy2xywh(boxes)


def resample_segments(segments: list[np.ndarray], n: int = 1000) -> list[np.ndarray]:
    """Return each closed polygon (k, 2) resampled by linear interpolation to ``n`` points (n, 2)."""
    out = []
    for s in segments:
        s = np.concatenate((s, s[:1]), axis=0)
        positions = np.linspace(0, len(s) - 1, n)
        index = np.arange(len(s))
        out.append(np.stack([np.interp(positions, index, s[:, i]) for i in range(2)], axis=1).astype(np.float32))
    return out


def clip_boxes(boxes: Array, shape: Shape) -> Array:
    """Clip xyxy boxes (..., 4) **in place** to an image of ``shape`` = (height, width); returns ``boxes``."""
    h, w = shape[0], shape[1]
    if isinstance(boxes, torch.Tensor):
        boxes[..., 0].clamp_(0, w)
        boxes[..., 1].clamp_(0, h)
        boxes[..., 2].clamp_(0, w)
        boxes[..., 3].clamp_(0, h)
    else:
        boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, w)
        boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, h)
    return boxes


def clip_segments(segments: Array, shape: Shape) -> Array:
    """Clip points (n, 2) **in place** to an image of ``shape`` = (height, width); returns ``segments``."""
    h, w = shape[0], shape[1]
    if isinstance(segments, torch.Tensor):
        segments[:, 0].clamp_(0, w)
        segments[:, 1].clamp_(0, h)
    else:
        segments[:, 0] = segments[:, 0].clip(0, w)
        segments[:, 1] = segments[:, 1].clip(0, h)
    return segments


def _gain_pad(img1_shape: Shape, img0_shape: Shape, ratio_pad=None) -> tuple[float, tuple[float, float]]:
    if ratio_pad is None:
        gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        pad = ((img1_shape[1] - img0_shape[1] * gain) / 2, (img1_shape[0] - img0_shape[0] * gain) / 2)
        return gain, pad
    return ratio_pad[0][0], ratio_pad[1]


def scale_boxes(img1_shape: Shape, boxes: Array, img0_shape: Shape, ratio_pad=None) -> Array:
    """Map xyxy pixel boxes (n, 4) **in place** from a letterboxed image (h1, w1) back to the original (h0, w0).

    ``ratio_pad`` = ((gain_h, gain_w), (pad_w, pad_h)) as produced by the letterbox; otherwise it is derived from
    the two shapes assuming centred padding. Boxes are clipped to the original image. Returns ``boxes``.
    """
    gain, pad = _gain_pad(img1_shape, img0_shape, ratio_pad)
    boxes[..., [0, 2]] -= pad[0]
    boxes[..., [1, 3]] -= pad[1]
    boxes[..., :4] /= gain
    return clip_boxes(boxes, img0_shape)


def scale_segments(img1_shape: Shape, segments: Array, img0_shape: Shape, ratio_pad=None,
                   normalize: bool = False) -> Array:
    """Map points (n, 2) **in place** from a letterboxed image back to the original; optionally normalise."""
    gain, pad = _gain_pad(img1_shape, img0_shape, ratio_pad)
    segments[:, 0] -= pad[0]
    segments[:, 1] -= pad[1]
    segments /= gain
    clip_segments(segments, img0_shape)
    if normalize:
        segments[:, 0] /= img0_shape[1]
        segments[:, 1] /= img0_shape[0]
    return segments


def box_iou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Return the pairwise IoU matrix (N, M) of xyxy boxes box1 (N, 4) and box2 (M, 4)."""
    top_left = torch.maximum(box1[:, None, :2], box2[None, :, :2])
    bottom_right = torch.minimum(box1[:, None, 2:], box2[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(2)
    area1 = (box1[:, 2:] - box1[:, :2]).prod(1)
    area2 = (box2[:, 2:] - box2[:, :2]).prod(1)
    return inter / (area1[:, None] + area2[None, :] - inter + eps)


def _corners_and_sizes(box: torch.Tensor, xywh: bool, eps: float) -> tuple[torch.Tensor, ...]:
    """Split boxes (..., 4) into x1, y1, x2, y2, w, h, each (..., 1). xyxy heights are clamped to >= eps."""
    if xywh:
        x, y, w, h = box.chunk(4, -1)
        return x - w / 2, y - h / 2, x + w / 2, y + h / 2, w, h
    x1, y1, x2, y2 = box.chunk(4, -1)
    return x1, y1, x2, y2, x2 - x1, (y2 - y1).clamp(eps)


def bbox_iou(box1: torch.Tensor, box2: torch.Tensor, xywh: bool = True, GIoU: bool = False, DIoU: bool = False,
             CIoU: bool = False, eps: float = 1e-7) -> torch.Tensor:
    """Return element-wise IoU, GIoU, DIoU or CIoU (..., 1) of boxes box1 (n, 4) and box2 (n, 4) (or broadcastable).

    Args:
        box1, box2: boxes in ``xywh`` (default) or xyxy.
        GIoU/DIoU/CIoU: which penalty to subtract (CIoU wins over DIoU wins over GIoU).
        eps: added to the union, enclosing area/diagonal and CIoU's alpha denominator.

    CIoU = IoU - (rho^2 / c^2 + alpha v), v = 4/pi^2 (atan(w2/h2) - atan(w1/h1))^2, alpha = v / (v - IoU + 1 + eps)
    with alpha computed without gradient, as upstream does.
    """
    b1_x1, b1_y1, b1_x2, b1_y2, w1, h1 = _corners_and_sizes(box1, xywh, eps)
    b2_x1, b2_y1, b2_x2, b2_y2, w2, h2 = _corners_and_sizes(box2, xywh, eps)
    inter = (torch.minimum(b1_x2, b2_x2) - torch.maximum(b1_x1, b2_x1)).clamp(0) * \
        (torch.minimum(b1_y2, b2_y2) - torch.maximum(b1_y1, b2_y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not (CIoU or DIoU or GIoU):
        return iou
    enclose_w = torch.maximum(b1_x2, b2_x2) - torch.minimum(b1_x1, b2_x1)
    enclose_h = torch.maximum(b1_y2, b2_y2) - torch.minimum(b1_y1, b2_y1)
    if GIoU and not (CIoU or DIoU):
        enclose_area = enclose_w * enclose_h + eps
        return iou - (enclose_area - union) / enclose_area
    diagonal_sq = enclose_w ** 2 + enclose_h ** 2 + eps
    centre_dist_sq = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
    if not CIoU:
        return iou - centre_dist_sq / diagonal_sq
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre_dist_sq / diagonal_sq + v * alpha)


def bbox_ioa(box1: np.ndarray, box2: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Return intersection over box2's area for numpy xyxy boxes.

    Args:
        box1: (4,) or (n, 4).
        box2: (m, 4).

    Returns:
        (m,) if box1 is a single box, else (n, m).
    """
    single = np.ndim(box1) == 1
    box1, box2 = np.atleast_2d(box1), np.atleast_2d(box2)
    inter_w = (np.minimum(box1[:, None, 2], box2[None, :, 2]) - np.maximum(box1[:, None, 0], box2[None, :, 0]))
    inter_h = (np.minimum(box1[:, None, 3], box2[None, :, 3]) - np.maximum(box1[:, None, 1], box2[None, :, 1]))
    inter = inter_w.clip(0) * inter_h.clip(0)
    area2 = (box2[:, 2] - box2[:, 0]) * (box2[:, 3] - box2[:, 1]) + eps
    ioa = inter / area2[None, :]
    return ioa[0] if single else ioa


box_ioa = bbox_ioa


def wh_iou(wh1: torch.Tensor, wh2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Return the IoU matrix (N, M) of sizes wh1 (N, 2) and wh2 (M, 2) as if the boxes shared a centre."""
    inter = torch.minimum(wh1[:, None], wh2[None]).prod(2)
    return inter / (wh1.prod(1)[:, None] + wh2.prod(1)[None] - inter + eps)
