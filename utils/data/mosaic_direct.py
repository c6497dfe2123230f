"""Fast mosaic rendering for axis-aligned warps: one ``cv2.resize`` per tile instead of canvas + ``warpAffine``.

When the random warp only scales by ``g`` and translates by ``(tx, ty)``, a tile whose resized image sits at
canvas offset ``o`` maps its source pixel centres to output pixels ``u = G * x + C`` with ``G = g * s`` (``s`` =
``tile.scale``, source -> resized) and ``C = g * (0.5 * s - 0.5 + o) + tx`` (OpenCV's pixel-centre convention,
which also holds for JPEGs decoded at 1/f size, where source pixel i covers original pixels [f i, f i + f)). Each
tile is produced by resizing just the part of the source that is visible (plus a 2 px margin) with exactly
``fx = G`` and copying it to the output at an integer position. The sub-pixel remainder of that position (at most
half an output pixel) is returned per tile so the caller can move the tile's labels by the same amount: labels and
pixels stay aligned. Optionally the HSV table is applied to the visible source crops when they hold fewer pixels
than the output (pointwise colour maps commute with resampling up to interpolation rounding).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from utils.data.augment import PAD_VALUE, apply_hsv_lut

MARGIN = 2  # source pixels kept around the visible part so bilinear taps stay inside the crop


class TilePlan(NamedTuple):
    """Where one tile goes: source crop (x0, y0, x1, y1), scales (gx, gy), output ROI (u0, v0, u1, v1) and the
    integer output position ``anchor`` of the resized crop's pixel 0, plus the remainder ``shift`` (output px)."""

    crop: tuple[int, int, int, int]
    scale: tuple[float, float]
    roi: tuple[int, int, int, int]
    anchor: tuple[int, int]
    shift: tuple[float, float]


def _output_span(start: int, stop: int, gain: float, shift: float, limit: int) -> tuple[int, int]:
    """Output pixel range whose centres map into canvas pixels [start, stop) under u = gain * x + shift."""
    first = math.ceil(gain * (start - 0.5) + shift)
    last = math.ceil(gain * (stop - 0.5) + shift)
    return min(max(first, 0), limit), min(max(last, 0), limit)


def _axis_plan(region: tuple[int, int], offset: int, source_scale: float, source: int, gain: float, shift: float,
               limit: int) -> tuple[int, int, float, int, int, int, float] | None:
    """Plan one axis: (crop0, crop1, scale, out0, out1, anchor, remainder) or None if nothing is visible."""
    out0, out1 = _output_span(region[0], region[1], gain, shift, limit)
    if out1 <= out0:
        return None
    scale = gain * source_scale
    constant = gain * (0.5 * source_scale - 0.5 + offset) + shift
    crop0 = max(math.floor((out0 - constant) / scale) - MARGIN, 0)
    crop1 = min(math.ceil((out1 - 1 - constant) / scale) + MARGIN + 1, source)
    exact = scale * crop0 + 0.5 - 0.5 * scale + constant  # output position of the resized crop's pixel 0
    anchor = round(exact)
    return crop0, crop1, scale, out0, out1, anchor, anchor - exact


def plan_tile(tile, gain: float, shift_x: float, shift_y: float, out_size: int) -> TilePlan | None:
    """Plan a ``utils.data.mosaic.Tile`` under the warp u = gain * canvas + shift; None when it is not visible."""
    source_h, source_w = tile.image.shape[:2]
    x_plan = _axis_plan((tile.region[0], tile.region[2]), tile.offset[0], tile.scale[0], source_w, gain, shift_x,
                        out_size)
    y_plan = _axis_plan((tile.region[1], tile.region[3]), tile.offset[1], tile.scale[1], source_h, gain, shift_y,
                        out_size)
    if x_plan is None or y_plan is None:
        return None
    return TilePlan((x_plan[0], y_plan[0], x_plan[1], y_plan[1]), (x_plan[2], y_plan[2]),
                    (x_plan[3], y_plan[3], x_plan[4], y_plan[4]), (x_plan[5], y_plan[5]), (x_plan[6], y_plan[6]))


def _window(resized: np.ndarray, plan: TilePlan) -> np.ndarray:
    """The part of the resized crop that covers the plan's ROI, edge-replicated where rounding left it short."""
    u0, v0, u1, v1 = plan.roi
    left, top = u0 - plan.anchor[0], v0 - plan.anchor[1]
    right, bottom = u1 - plan.anchor[0], v1 - plan.anchor[1]
    pads = (max(-top, 0), max(bottom - resized.shape[0], 0), max(-left, 0), max(right - resized.shape[1], 0))
    if any(pads):
        resized = cv2.copyMakeBorder(resized, *pads, cv2.BORDER_REPLICATE)
        top, bottom, left, right = top + pads[0], bottom + pads[0], left + pads[2], right + pads[2]
    return resized[top:bottom, left:right]


def render_direct(tiles: list, matrix: np.ndarray, out_size: int,
                  lut: np.ndarray | None = None) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Render the warped mosaic (out_size, out_size, 3) BGR uint8 for an axis-aligned ``matrix``.

    Args:
        tiles: ``utils.data.mosaic.Tile`` list (source image, resized size, canvas region and offset).
        matrix: 3x3 warp canvas -> output with matrix[0, 0] == matrix[1, 1] and no rotation/shear/perspective.
        lut: optional HSV table (``augmentations.hsv_lut``) applied to every pixel.

    Returns:
        (image, per-tile (dx, dy) in **canvas** pixels to add to that tile's labels).
    """
    gain, shift_x, shift_y = float(matrix[0, 0]), float(matrix[0, 2]), float(matrix[1, 2])
    plans = [plan_tile(tile, gain, shift_x, shift_y, out_size) for tile in tiles]
    crop_pixels = sum((p.crop[2] - p.crop[0]) * (p.crop[3] - p.crop[1]) for p in plans if p is not None)
    hsv_on_sources = lut is not None and crop_pixels < out_size * out_size
    out = np.full((out_size, out_size, 3), PAD_VALUE, dtype=np.uint8)
    shifts = []
    for tile, plan in zip(tiles, plans, strict=True):
        if plan is None:
            shifts.append((0.0, 0.0))
            continue
        x0, y0, x1, y1 = plan.crop
        crop = tile.image[y0:y1, x0:x1]
        if hsv_on_sources:
            crop = apply_hsv_lut(crop, lut)
        resized = cv2.resize(crop, None, fx=plan.scale[0], fy=plan.scale[1], interpolation=cv2.INTER_LINEAR)
        u0, v0, u1, v1 = plan.roi
        out[v0:v1, u0:u1] = _window(resized, plan)
        shifts.append((plan.shift[0] / gain, plan.shift[1] / gain))
    if lut is not None and not hsv_on_sources:
        apply_hsv_lut(out, lut, out=out)
    return out, shifts
