"""Pure box and segment geometry.

Formats in names: ``xyxy`` = corners (x1, y1, x2, y2); ``xywh`` = centre x, centre y, width, height; a trailing
``n`` means normalised to [0, 1] by the image width/height. Every function accepts a ``torch.Tensor`` or a
``numpy.ndarray`` of shape (..., 4) and returns the same kind. Conversions never modify their input; the
``clip_*``/``scale_*`` functions keep upstream's in-place contract (documented on each).
"""

from __future__ import annotations

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
