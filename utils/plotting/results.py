"""Run-level plots: ``results.png`` (10 panels from ``results.csv``) and ``evolve.png`` (from ``evolve.csv``).

Figures are drawn on an Agg canvas without pyplot, so plotting never touches a global matplotlib state or needs a
display. Both files are written atomically.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from utils.files import atomic_write_bytes
from utils.logging import LOGGER

PathLike = Union[str, Path]

# results.csv column (by header name) shown in each of the 10 panels, in upstream's order: train losses, P, R on
# the top row; val losses, mAP50, mAP50-95 on the bottom row.
RESULTS_PANELS = ("train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
                  "val/box_loss", "val/obj_loss", "val/cls_loss", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95")
# segmentation results.csv: losses and box metrics on the top row, val losses and mask metrics below (16 panels)
SEGMENT_PANELS = ("train/box_loss", "train/seg_loss", "train/obj_loss", "train/cls_loss", "metrics/precision(B)",
                  "metrics/recall(B)", "metrics/mAP_0.5(B)", "metrics/mAP_0.5:0.95(B)", "val/box_loss",
                  "val/seg_loss", "val/obj_loss", "val/cls_loss", "metrics/precision(M)", "metrics/recall(M)",
                  "metrics/mAP_0.5(M)", "metrics/mAP_0.5:0.95(M)")


def read_csv_table(file: PathLike) -> tuple[list[str], np.ndarray]:
    """Return ``(column_names, values)`` of a comma-separated table with a header row (values float, (rows, cols))."""
    lines = [line for line in Path(file).read_text().splitlines() if line.strip()]
    if not lines:
        return [], np.zeros((0, 0))
    header = [h.strip() for h in lines[0].split(",")]
    rows = [[float(v) for v in line.split(",")] for line in lines[1:]]
    return header, np.array(rows, dtype=float).reshape(len(rows), len(header))


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), tight_layout=True)
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, file: Path, dpi: int = 200) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(file, buffer.getvalue())


def _smooth(y: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    """Return a Gaussian-smoothed copy of ``y`` (edges reflected), for the dotted trend line."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(y, sigma=sigma, mode="nearest") if len(y) > 1 else y


def plot_results(file: PathLike = "path/to/results.csv", dir: PathLike = "",  # noqa: A002 (upstream name)
                 panels: Sequence[str] | None = None) -> Path:
    """Plot ``results.csv`` (``file``, or ``dir/results.csv``) as ``results.png`` beside it; returns the png path.

    Each panel shows one column (``panels``: names; default: the 16 segmentation panels when the file has a
    ``train/seg_loss`` column, else the 10 detection panels) against the epoch, with a smoothed dotted trend line.
    More than 5 panels are laid out in 2 rows, fewer in one.
    """
    csv = Path(dir) / "results.csv" if dir else Path(file)
    header, values = read_csv_table(csv)
    if panels is None:
        panels = SEGMENT_PANELS if "train/seg_loss" in header else RESULTS_PANELS
    rows = 2 if len(panels) > 5 else 1
    columns = -(-len(panels) // rows)
    figure = _new_figure(2.4 * columns, 3 * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    epochs = values[:, 0] if values.size else np.zeros(0)
    for ax, name in zip(axes, panels, strict=False):
        if name in header and values.size:
            y = values[:, header.index(name)]
            ax.plot(epochs, y, marker=".", label=csv.parent.name, linewidth=2, markersize=8)
            ax.plot(epochs, _smooth(y), ":", label="smooth", linewidth=2)
        ax.set_title(name, fontsize=12)
    axes[min(1, len(axes) - 1)].legend()
    out = csv.with_name("results.png")
    _save_figure(figure, out)
    LOGGER.debug(f"Saved {out}")
    return out


def plot_evolve(evolve_csv: PathLike = "path/to/evolve.csv", result_columns: int = 7) -> Path:
    """Plot every evolved hyperparameter against fitness as ``evolve.png`` beside ``evolve.csv``; returns its path.

    ``evolve.csv`` has ``result_columns`` result columns (P, R, mAP50, mAP50-95, val losses) then one column per
    hyperparameter. Points are coloured by fitness; the best row is marked with a large '+'.
    """
    from utils.metrics import fitness

    csv = Path(evolve_csv)
    header, values = read_csv_table(csv)
    keys = header[result_columns:]
    scores = fitness(values) if len(values) else np.zeros(0)
    best = int(np.argmax(scores)) if len(scores) else 0
    columns = 5
    rows = max(math.ceil(len(keys) / columns), 1)
    figure = _new_figure(2.4 * columns, 2.4 * rows)
    for i, key in enumerate(keys):
        ax = figure.add_subplot(rows, columns, i + 1)
        v = values[:, result_columns + i]
        ax.scatter(v, scores, c=scores, cmap="viridis", alpha=0.8, edgecolors="none", s=12)
        ax.plot(v[best], scores[best], "k+", markersize=15)
        ax.set_title(f"{key} = {v[best]:.3g}", fontdict={"size": 9})
        ax.tick_params(labelsize=6)
        if i % columns:
            ax.set_yticks([])
    out = csv.with_suffix(".png")
    _save_figure(figure, out)
    LOGGER.info(f"Saved {out}")
    return out


def append_results_row(csv: PathLike, keys: Sequence[str], epoch: int, values: Sequence[float]) -> None:
    """Append one ``epoch`` row of ``values`` (in ``keys`` order) to ``csv``, writing the header first; atomic.

    Raises:
        ValueError: ``values`` and ``keys`` differ in length.
    """
    if len(values) != len(keys):
        raise ValueError(f"{csv}: {len(keys)} columns expected, got {len(values)} values")
    csv = Path(csv)
    text = csv.read_text() if csv.is_file() else format_csv_header(("epoch", *keys)) + "\n"
    atomic_write_bytes(csv, (text + format_csv_row([epoch, *[float(v) for v in values]]) + "\n").encode())


def format_csv_row(values: Sequence[float]) -> str:
    """Return one results/evolve CSV data row: each value ``%20.5g``, comma-separated (upstream's format)."""
    return ",".join(f"{v:>20.5g}" for v in values)


def format_csv_header(names: Sequence[str]) -> str:
    """Return a results/evolve CSV header row: each name right-aligned to width 20, comma-separated."""
    return ",".join(f"{n:>20}" for n in names)
