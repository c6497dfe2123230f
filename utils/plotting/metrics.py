"""Figures for detection metrics: PR curve, metric-confidence curves and the confusion matrix heatmap.

Figures are built on ``matplotlib.figure.Figure`` objects (Agg rendering, no pyplot state, no global backend or
style change) and written atomically: a temporary file in the target directory, then ``os.replace``. A figure
that cannot be drawn or written logs a warning naming the file; metrics are never lost to a plotting failure.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from utils.logging import LOGGER
from utils.ops import smooth


def _save_atomically(draw: Callable[[Any], None], path: Path, figsize: tuple[float, float], dpi: int = 250) -> None:
    """Create a figure, let ``draw(fig)`` fill it, and write it to ``path`` (PNG) atomically; warn on failure."""
    from matplotlib.figure import Figure

    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = Figure(figsize=figsize, tight_layout=True)
        draw(fig)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
        os.close(fd)
        fig.savefig(tmp_name, dpi=dpi, format="png")
        os.replace(tmp_name, path)
        tmp_name = None
    except (OSError, ValueError, RuntimeError, KeyError, IndexError) as error:
        LOGGER.warning(f"WARNING ⚠️ could not write plot {path}: {error}")
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.remove(tmp_name)


def plot_pr_curve(px: np.ndarray, py: np.ndarray, ap: np.ndarray, save_dir: str | Path = "pr_curve.png",
                  names: dict | None = None) -> None:
    """Plot precision-recall curves.

    Args:
        px: (1000,) recall grid. py: (1000, c) precision per plotted class. ap: (c, k) AP, column 0 = IoU 0.5.
        save_dir: output PNG path. names: {index: name}; per-class legends only when 0 < len(names) < 21.
    """
    names = names or {}
    py = np.asarray(py).reshape(len(px), -1)

    def draw(fig):
        ax = fig.subplots(1, 1)
        per_class = 0 < len(names) < 21
        for i, y in enumerate(py.T):
            label = f"{names.get(i, i)} {ap[i, 0]:.3f}" if per_class and i < len(ap) else None
            ax.plot(px, y, linewidth=1 if per_class else 0.5, color=None if per_class else "grey", label=label)
        mean_ap = ap[:, 0].mean() if len(ap) else 0.0
        mean_curve = py.mean(1) if py.shape[1] else np.zeros_like(px)
        ax.plot(px, mean_curve, linewidth=3, color="blue", label=f"all classes {mean_ap:.3f} mAP@0.5")
        ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1), title="Precision-Recall Curve")
        ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")

    _save_atomically(draw, Path(save_dir), (9, 6))


def plot_mc_curve(px: np.ndarray, py: np.ndarray, save_dir: str | Path = "mc_curve.png", names: dict | None = None,
                  xlabel: str = "Confidence", ylabel: str = "Metric") -> None:
    """Plot a metric against confidence.

    Args:
        px: (1000,) confidence grid. py: (c, 1000) metric per class. save_dir: output PNG path.
        names: {index: name}; per-class legends only when 0 < len(names) < 21. The bold curve is the class mean
            smoothed with f=0.05, labelled with its maximum and where it occurs.
    """
    names = names or {}
    py = np.asarray(py).reshape(-1, len(px))

    def draw(fig):
        ax = fig.subplots(1, 1)
        per_class = 0 < len(names) < 21
        for i, y in enumerate(py):
            label = f"{names.get(i, i)}" if per_class else None
            ax.plot(px, y, linewidth=1 if per_class else 0.5, color=None if per_class else "grey", label=label)
        mean_curve = smooth(py.mean(0), 0.05) if len(py) else np.zeros_like(px)
        label = f"all classes {mean_curve.max():.2f} at {px[mean_curve.argmax()]:.3f}"
        ax.plot(px, mean_curve, linewidth=3, color="blue", label=label)
        ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1), title=f"{ylabel}-Confidence Curve")
        ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")

    _save_atomically(draw, Path(save_dir), (9, 6))


def plot_confusion_matrix(matrix: np.ndarray, nc: int, path: str | Path, normalize: bool = True,
                          names: Any = ()) -> None:
    """Write a heatmap of a (nc + 1, nc + 1) confusion matrix (rows predicted, columns true) as a PNG.

    Columns are normalised to sum 1 when ``normalize``; cells below 0.005 are blank. Cells are annotated when
    nc < 30; tick labels are the names plus 'background' when len(names) == nc < 99. Drawn with matplotlib alone
    (an image plus one text per non-blank cell), at 150 dpi.
    """
    names = list(names.values()) if isinstance(names, dict) else list(names)
    array = matrix / ((matrix.sum(0).reshape(1, -1) + 1e-9) if normalize else 1)
    array = np.where(array < 0.005, np.nan, array)
    labelled = 0 < len(names) < 99 and len(names) == nc

    def draw(fig):
        ax = fig.subplots(1, 1)
        finite = array[np.isfinite(array)]
        image = ax.imshow(np.ma.masked_invalid(array), cmap="Blues", vmin=0.0,
                          vmax=float(finite.max()) if finite.size else 1.0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        if nc < 30:
            rows, cols = np.nonzero(np.isfinite(array))
            threshold = 0.5 * (float(finite.max()) if finite.size else 1.0)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                ax.text(c, r, f"{array[r, c]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if array[r, c] > threshold else "black")
        if labelled:
            ticks = range(nc + 1)
            ax.set_xticks(ticks, labels=[*names, "background"], rotation=90)
            ax.set_yticks(ticks, labels=[*names, "background"])
        ax.tick_params(labelsize=10 if nc < 50 else 8)
        ax.set(xlabel="True", ylabel="Predicted", title="Confusion Matrix")

    _save_atomically(draw, Path(path), (12, 9), dpi=150)
