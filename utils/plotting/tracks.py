"""Drawing tracked objects: one stable colour per track id, an ``id:<n> name conf`` tab, and the track's trail."""

from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

from utils.plotting.annotate import Annotator, colors

__all__ = ["draw_tracks"]


def draw_tracks(im: np.ndarray, tracks: np.ndarray, names: Mapping[int, str],
                trails: Mapping[int, np.ndarray] | None = None, line_width: int | None = None, labels: bool = True,
                hide_conf: bool = False, bgr: bool = True) -> np.ndarray:
    """Return a copy of ``im`` (HWC uint8) with the tracks drawn on it; ``im`` itself is left unchanged.

    Args:
        tracks: (m, 7+) ``[x1, y1, x2, y2, track_id, conf, cls, ...]`` in ``im``'s pixels.
        names: {class id: name}. trails: {track id: (k, 2) past box centres, oldest first} drawn as fading lines.
        line_width: pixels (None: from the image size). labels: draw the ``id:<n> name conf`` tab (``hide_conf``:
            without the score). bgr: ``im`` is BGR (colours swapped to match); otherwise RGB.
    """
    annotator = Annotator(np.ascontiguousarray(im).copy(), line_width=line_width, example=str(names))
    canvas = annotator.im
    for track_id, points in (trails or {}).items():
        if len(points) < 2:
            continue
        colour = colors(int(track_id), bgr)
        pts = np.round(np.asarray(points)).astype(np.int32)
        for k in range(1, len(pts)):  # thicker towards the newest point
            width = max(1, round(annotator.lw * k / len(pts)))
            cv2.line(canvas, tuple(pts[k - 1].tolist()), tuple(pts[k].tolist()), colour, width, cv2.LINE_AA)
    for x1, y1, x2, y2, track_id, conf, cls in np.asarray(tracks, dtype=np.float64)[:, :7].tolist():
        name = names.get(int(cls), str(int(cls))) if isinstance(names, Mapping) else str(int(cls))
        label = (f"id:{int(track_id)} {name}" + ("" if hide_conf else f" {conf:.2f}")) if labels else ""
        annotator.box_label((x1, y1, x2, y2), label, color=colors(int(track_id), bgr))
    return np.asarray(annotator.result())
