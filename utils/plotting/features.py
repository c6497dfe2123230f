"""Feature-map images for ``detect.py --visualize`` (called from ``BaseModel._forward_once``).

Drawing uses matplotlib's object API with the Agg canvas, so nothing global (the pyplot backend, rcParams) changes
and no display is needed.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.files import atomic_write_bytes
from utils.logging import LOGGER

GRID_COLUMNS = 8


def feature_visualization(x: Any, module_type: str, stage: int, n: int = 32,
                          save_dir: Path = Path("runs/detect/exp")) -> Path | None:
    """Save the first ``n`` channels of one layer's output as a PNG grid plus the full map as ``.npy``.

    Args:
        x: the layer output; only a (B, C, H, W) tensor with H > 1 and W > 1 is drawn (image 0 of the batch).
            Head outputs (``module_type`` containing 'Detect' or 'Segment') and lists/tuples are skipped.
        module_type: qualified layer type, e.g. ``models.common.C3`` (its last part names the file).
        stage: layer index in the model.
        n: maximum number of channels drawn (8 per row).
        save_dir: folder for ``stage{stage}_{Type}_features.png`` and ``.npy`` (created if missing).

    Returns:
        The PNG path, or None when nothing was drawn.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or any(k in module_type for k in ("Detect", "Segment")):
        return None
    _, channels, height, width = x.shape
    if height <= 1 or width <= 1:
        return None
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    file = save_dir / f"stage{stage}_{module_type.split('.')[-1]}_features.png"
    maps = x[0].detach().float().cpu().numpy()
    atomic_write_bytes(file, _render_grid(maps[: min(n, channels)]))
    atomic_write_bytes(file.with_suffix(".npy"), _npy_bytes(maps))
    LOGGER.info(f"Saving {file}... ({min(n, channels)}/{channels})")
    return file


def _render_grid(maps: np.ndarray) -> bytes:
    """Return PNG bytes of a grid of single-channel maps (k, H, W), 8 per row, no axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = math.ceil(len(maps) / GRID_COLUMNS)
    figure = Figure(figsize=(GRID_COLUMNS, rows), tight_layout=True)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, GRID_COLUMNS, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, fmap in zip(axes, maps, strict=False):
        ax.imshow(fmap)
    figure.subplots_adjust(wspace=0.05, hspace=0.05)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
