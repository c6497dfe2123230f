"""Ground-truth instance masks from polygons (upstream ``polygon2mask``/``polygons2masks``/``polygons2masks_overlap``).

Polygons are (k, 2) ``x, y`` arrays (or flat (2k,)) in pixels of an image of ``img_size`` (h, w); masks are made at
``(h // downsample_ratio, w // downsample_ratio)`` (``--mask-ratio``, 4 by default: the prototype resolution).

The values are upstream's: each polygon (vertices truncated to integers) is filled at full resolution and the 0/1
image shrunk with ``cv2.resize`` (bilinear). When both image sides are multiples of the ratio, every small pixel
depends only on its own ``ratio x ratio`` block, so only the blocks under the polygon's bounding box are filled and
shrunk: identical masks for a fraction of the pixels.

``polygons2masks_overlap`` stores all instances of an image in one index mask: instances are sorted by pixel area,
largest first, and pixel value ``k`` means the k-th instance of that order (1-based; 0 = background); a smaller
instance covers a larger one where they overlap. It returns the order so the labels can be sorted the same way.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

__all__ = ["polygon2mask", "polygons2masks", "polygons2masks_overlap"]


def _int_polygon(polygon: np.ndarray) -> np.ndarray:
    """(k, 2) int32 vertices, truncated toward zero as upstream's ``astype(np.int32)``."""
    return np.asarray(polygon, dtype=np.float64).reshape(-1, 2).astype(np.int32)


def _fill_block_aligned(mask: np.ndarray, contours: list[np.ndarray], color: int, ratio: int) -> None:
    """Fill int contours (each (k, 2), full-resolution pixels) into the small ``mask`` in place: only the
    ``ratio x ratio`` blocks under their bounding box are filled at full resolution and shrunk."""
    points = np.concatenate(contours)
    x0 = min(max(int(points[:, 0].min()) // ratio, 0), mask.shape[1])
    y0 = min(max(int(points[:, 1].min()) // ratio, 0), mask.shape[0])
    x1 = min(max(-(-(int(points[:, 0].max()) + 1) // ratio), 0), mask.shape[1])
    y1 = min(max(-(-(int(points[:, 1].max()) + 1) // ratio), 0), mask.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    roi = np.zeros(((y1 - y0) * ratio, (x1 - x0) * ratio), dtype=np.uint8)
    offset = np.array([x0 * ratio, y0 * ratio], dtype=np.int32)
    cv2.fillPoly(roi, [c - offset for c in contours], color)
    small = roi if ratio == 1 else cv2.resize(roi, (x1 - x0, y1 - y0))
    np.maximum(mask[y0:y1, x0:x1], small, out=mask[y0:y1, x0:x1])


def polygon2mask(img_size: Sequence[int], polygons: Sequence[np.ndarray], color: int = 1,
                 downsample_ratio: int = 1) -> np.ndarray:
    """Fill ``polygons`` (together, as one ``cv2.fillPoly`` call) into one uint8 mask of
    ``(h // downsample_ratio, w // downsample_ratio)`` with value ``color``; polygons under 3 points are skipped."""
    height, width = (int(v) for v in img_size[:2])
    ratio = int(downsample_ratio)
    contours = [_int_polygon(p) for p in polygons if np.asarray(p).size >= 6]
    if height % ratio or width % ratio:  # the shrink is not block-local: fill the whole image, as upstream
        full = np.zeros((height, width), dtype=np.uint8)
        if contours:
            cv2.fillPoly(full, contours, color)
        return full if ratio == 1 else cv2.resize(full, (width // ratio, height // ratio))
    mask = np.zeros((height // ratio, width // ratio), dtype=np.uint8)
    if contours:
        _fill_block_aligned(mask, contours, color, ratio)
    return mask


def polygons2masks(img_size: Sequence[int], polygons: Sequence[np.ndarray], color: int = 1,
                   downsample_ratio: int = 1) -> np.ndarray:
    """One uint8 mask per polygon: (n, h // ratio, w // ratio) (``--no-overlap``)."""
    height, width = (int(v) // int(downsample_ratio) for v in img_size[:2])
    if not len(polygons):
        return np.zeros((0, height, width), dtype=np.uint8)
    return np.stack([polygon2mask(img_size, [p], color, downsample_ratio) for p in polygons])


def polygons2masks_overlap(img_size: Sequence[int], segments: Sequence[np.ndarray],
                           downsample_ratio: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """All instances in one index mask (module docstring).

    Returns:
        (index mask (h // ratio, w // ratio), uint8, or int32 for more than 255 instances; order (n,) int: the
        instance drawn as value ``k`` is ``segments[order[k - 1]]``).
    """
    masks = polygons2masks(img_size, segments, 1, downsample_ratio)
    order = np.argsort(-masks.reshape(len(masks), -1).sum(1, dtype=np.int64), kind="stable")
    dtype = np.int32 if len(segments) > 255 else np.uint8
    index = np.zeros(masks.shape[1:], dtype=dtype)
    for value, i in enumerate(order, 1):
        index[masks[i].astype(bool)] = value
    return index, order
