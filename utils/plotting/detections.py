"""Drawing one image's detections: boxes in class colours with ``name conf`` tabs."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from utils.plotting.annotate import Annotator, colors

__all__ = ["draw_detections"]


def draw_detections(im: np.ndarray, det: torch.Tensor, names: Mapping[int, str], line_width: int | None = None,
                    labels: bool = True, hide_conf: bool = False, bgr: bool = True) -> np.ndarray:
    """Return a copy of ``im`` (HWC uint8) with the detections drawn on it; ``im`` itself is left unchanged.

    Args:
        det: (n, 6) ``[x1, y1, x2, y2, conf, cls]`` in ``im``'s pixels, conf descending (drawn lowest first, so the
            most confident box ends on top).
        names: {class id: name}. line_width: pixels (None: from the image size).
        labels: draw the ``name conf`` tab (``name`` alone with ``hide_conf``).
        bgr: ``im`` is BGR (colours are swapped to match); otherwise RGB.
    """
    annotator = Annotator(np.ascontiguousarray(im).copy(), line_width=line_width, example=str(names))
    for *xyxy, conf, cls in reversed(det.tolist()):
        c = int(cls)
        label = (names[c] if hide_conf else f"{names[c]} {conf:.2f}") if labels else ""
        annotator.box_label(xyxy, label, color=colors(c, bgr))
    return np.asarray(annotator.result())
