"""Mosaic augmentation: 4 images (upstream ``load_mosaic``) and 9 images (``load_mosaic9``).

The reference construction pastes the resized images on a 2s x 2s canvas filled with 114 and warps the canvas to
s x s with ``random_perspective``. When the drawn warp is axis-aligned (no rotation, shear or perspective; true
for every stock hyp file) and copy-paste is inactive, ``load_mosaic`` skips the canvas: each decoded image is
resampled once, straight into its part of the output (``utils.data.mosaic_direct``), and its labels follow the
rendered pixels to within floating-point error. Setting ``dataset.direct_mosaic = False`` forces the reference
path (used by tests and benchmarks).

Both functions take the dataset (``LoadImagesAndLabels``) and return (image HWC BGR uint8 (s, s, 3),
labels (n, 5) [cls, x1, y1, x2, y2] pixels).
"""

from __future__ import annotations

import random
from typing import NamedTuple

import cv2
import numpy as np

from utils.boxes import xyn2xy, xywhn2xyxy
from utils.data.augment import (
    PAD_VALUE,
    apply_hsv_lut,
    copy_paste,
    hsv_lut,
    random_affine_matrix,
    random_perspective,
    random_perspective_with_segments,
    warp_targets,
)
from utils.data.mosaic_direct import render_direct


class Tile(NamedTuple):
    """One image placed on the mosaic canvas.

    ``size`` (h, w) is the image's size after ``load_image`` (long side = img_size); ``region`` = (x1, y1, x2, y2)
    is the visible part on the canvas and ``offset`` = (padw, padh) the canvas position of the resized image's
    top-left corner. ``image`` is the loaded array (None until loaded): the decoded original (possibly decoded
    at a reduced size) or the RAM-cached resized image; ``scale`` = (sx, sy) maps its pixels onto the resized grid.
    """

    index: int
    size: tuple[int, int]
    region: tuple[int, int, int, int]
    offset: tuple[int, int]
    image: np.ndarray | None = None
    scale: tuple[float, float] = (1.0, 1.0)


def _place4(position: int, centre: tuple[int, int], size: tuple[int, int], s: int) -> tuple[tuple, tuple]:
    """Return (canvas region xyxy, offset) for tile ``position`` (0 TL, 1 TR, 2 BL, 3 BR) touching the centre."""
    xc, yc = centre
    h, w = size
    x1 = max(xc - w, 0) if position in (0, 2) else xc
    x2 = xc if position in (0, 2) else min(xc + w, 2 * s)
    y1 = max(yc - h, 0) if position in (0, 1) else yc
    y2 = yc if position in (0, 1) else min(yc + h, 2 * s)
    offset_x = xc - w if position in (0, 2) else xc
    offset_y = yc - h if position in (0, 1) else yc
    return (x1, y1, x2, y2), (offset_x, offset_y)


def _tile_labels(dataset, tile: Tile, shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, list]:
    """Return the tile's labels (n, 5) [cls, x1, y1, x2, y2] and segments in canvas pixels (moved by ``shift``)."""
    h, w = tile.size
    pad_x, pad_y = tile.offset[0] + shift[0], tile.offset[1] + shift[1]
    labels = dataset.labels[tile.index].astype(np.float64)
    if labels.size:
        labels[:, 1:] = xywhn2xyxy(labels[:, 1:], w, h, pad_x, pad_y)
    segments = [xyn2xy(x.astype(np.float64), w, h, pad_x, pad_y) for x in dataset.segments[tile.index]]
    return labels, segments


def _gather_labels(dataset, tiles: list[Tile], limit: int,
                   shifts: list | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Concatenate tile labels (each moved by its ``shifts`` entry) and clip boxes and segments to [0, limit]."""
    labels, segments = [], []
    for tile, shift in zip(tiles, shifts or [(0.0, 0.0)] * len(tiles), strict=True):
        tile_labels, tile_segments = _tile_labels(dataset, tile, shift)
        labels.append(tile_labels)
        segments.extend(tile_segments)
    all_labels = np.concatenate(labels, 0).astype(np.float64)
    np.clip(all_labels[:, 1:], 0, limit, out=all_labels[:, 1:])
    for segment in segments:
        np.clip(segment, 0, limit, out=segment)
    return all_labels, segments


def paste_tiles(tiles: list[Tile], canvas_size: int) -> np.ndarray:
    """Return a square canvas (filled with 114) with each tile's resized image pasted into its region."""
    canvas = np.full((canvas_size, canvas_size, 3), PAD_VALUE, dtype=np.uint8)
    for tile in tiles:
        h, w = tile.size
        image = tile.image
        if image.shape[:2] != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        x1, y1, x2, y2 = tile.region
        ox, oy = tile.offset
        canvas[y1:y2, x1:x2] = image[y1 - oy:y2 - oy, x1 - ox:x2 - ox]
    return canvas


def is_axis_aligned(matrix: np.ndarray) -> bool:
    """True if a 3x3 warp only scales and translates (no rotation, shear or perspective)."""
    return matrix[0, 1] == 0 and matrix[1, 0] == 0 and matrix[2, 0] == 0 and matrix[2, 1] == 0


def _perspective_kwargs(hyp: dict) -> dict:
    return {key: hyp[key] for key in ("degrees", "translate", "scale", "shear", "perspective")}


def _load(dataset, tile: Tile, reduction: int = 1) -> Tile:
    image, scale = dataset.load_raw_image(tile.index, reduction)
    return tile._replace(image=image, scale=scale)


def _reduction(dataset, tile: Tile, gain: float) -> int:
    """Largest JPEG decode reduction (1, 2, 4, 8) that still gives at least one source pixel per output pixel."""
    if dataset.ims[tile.index] is not None or dataset.cache_disk:
        return 1
    per_output = gain * tile.size[1] / float(dataset.shapes[tile.index][0])  # output px per original px
    return next((f for f in (8, 4, 2) if per_output * f <= 1.0), 1)


def _layout4(dataset, index: int) -> list[Tile]:
    """Draw the mosaic centre and the 3 extra images (python ``random``) and place the 4 tiles (not loaded)."""
    s = dataset.img_size
    yc, xc = (int(random.uniform(-border, 2 * s + border)) for border in dataset.mosaic_border)
    indices = [index] + random.choices(dataset.indices, k=3)
    random.shuffle(indices)
    tiles = []
    for position, i in enumerate(indices):
        size = dataset.resized_size(i)
        region, offset = _place4(position, (xc, yc), size, s)
        tiles.append(Tile(i, size, region, offset))
    return tiles


def load_mosaic(dataset, index: int, hsv_gains: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Build a 4-image mosaic around ``index`` (plus 3 random images), then copy-paste and random-warp it to s x s.

    The centre is drawn uniformly in [s/2, 3s/2] per axis, the four images are shuffled into the quadrants,
    labels/segments are clipped to the 2s canvas, and the warp uses ``dataset.mosaic_border`` (-s/2). With
    ``hsv_gains`` (see ``augmentations.random_hsv_gains``) the HSV augmentation is applied here as well.
    """
    image, labels, _ = load_mosaic_with_segments(dataset, index, hsv_gains)
    return image, labels


def load_mosaic_with_segments(dataset, index: int,
                              hsv_gains: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """:func:`load_mosaic` that also returns the surviving polygons in output pixels (one per label row when every
    tile has one polygon per label, as the segmentation dataset guarantees; else [])."""
    s, hyp = dataset.img_size, dataset.hyp
    tiles = _layout4(dataset, index)
    lut = hsv_lut(hsv_gains) if hsv_gains is not None else None
    perspective = bool(hyp["perspective"])
    if hyp["copy_paste"] and any(len(dataset.segments[tile.index]) for tile in tiles):
        tiles = [_load(dataset, tile) for tile in tiles]
        labels, segments = _gather_labels(dataset, tiles, 2 * s)
        canvas, labels, segments = copy_paste(paste_tiles(tiles, 2 * s), labels, segments, p=hyp["copy_paste"])
        image, labels, segments = random_perspective_with_segments(canvas, labels, segments,
                                                                   border=dataset.mosaic_border,
                                                                   **_perspective_kwargs(hyp))
        return (image if lut is None else apply_hsv_lut(image, lut, out=image)), labels, segments
    out_shape = (2 * s + 2 * dataset.mosaic_border[0], 2 * s + 2 * dataset.mosaic_border[1])
    matrix, zoom = random_affine_matrix((2 * s, 2 * s), out_shape, **_perspective_kwargs(hyp))
    shifts = None
    if getattr(dataset, "direct_mosaic", True) and is_axis_aligned(matrix) and out_shape[0] == out_shape[1]:
        tiles = [_load(dataset, tile, _reduction(dataset, tile, float(matrix[0, 0]))) for tile in tiles]
        image, shifts = render_direct(tiles, matrix, out_shape[0], lut)
    else:
        tiles = [_load(dataset, tile) for tile in tiles]
        image = _warp_canvas(paste_tiles(tiles, 2 * s), matrix, out_shape, perspective)
        image = image if lut is None else apply_hsv_lut(image, lut, out=image)
    labels, segments = _gather_labels(dataset, tiles, 2 * s, shifts)
    return image, *warp_targets(labels, segments, matrix, zoom, out_shape[1], out_shape[0], perspective)


def _warp_canvas(canvas: np.ndarray, matrix: np.ndarray, out_shape: tuple[int, int], perspective: bool) -> np.ndarray:
    size = (out_shape[1], out_shape[0])
    fill = (PAD_VALUE, PAD_VALUE, PAD_VALUE)
    if perspective:
        return cv2.warpPerspective(canvas, matrix, dsize=size, borderValue=fill)
    return cv2.warpAffine(canvas, matrix[:2], dsize=size, borderValue=fill)


def _place9(position: int, size: tuple[int, int], s: int) -> tuple[tuple, tuple]:
    """Region and offset of tile ``position`` (row-major 3x3 grid of s x s cells), aligned towards the centre cell."""
    row, col = divmod(position, 3)
    h, w = size
    offset_x = col * s + (s - w if col == 0 else 0 if col == 2 else (s - w) // 2)
    offset_y = row * s + (s - h if row == 0 else 0 if row == 2 else (s - h) // 2)
    return (offset_x, offset_y, offset_x + w, offset_y + h), (offset_x, offset_y)


def load_mosaic9(dataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Build a 9-image mosaic: a 3x3 grid of s x s cells (``index`` in the centre), a random 2s x 2s crop, then
    copy-paste and the random warp to s x s. Never used by the default pipeline (as upstream)."""
    s, hyp = dataset.img_size, dataset.hyp
    indices = random.choices(dataset.indices, k=8)
    indices.insert(4, index)
    tiles = []
    for position, i in enumerate(indices):
        size = dataset.resized_size(i)
        region, offset = _place9(position, size, s)
        tiles.append(_load(dataset, Tile(i, size, region, offset)))
    crop_x, crop_y = (int(random.uniform(0, s)) for _ in range(2))
    canvas = paste_tiles(tiles, 3 * s)[crop_y:crop_y + 2 * s, crop_x:crop_x + 2 * s]
    shifted = [tile._replace(offset=(tile.offset[0] - crop_x, tile.offset[1] - crop_y)) for tile in tiles]
    labels, segments = _gather_labels(dataset, shifted, 2 * s)
    canvas, labels, segments = copy_paste(np.ascontiguousarray(canvas), labels, segments, p=hyp["copy_paste"])
    return random_perspective(canvas, labels, segments, border=dataset.mosaic_border, **_perspective_kwargs(hyp))
