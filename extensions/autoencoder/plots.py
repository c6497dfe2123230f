"""Pretrainer outputs for people: ``results.csv``, the loss curve ``results.png`` and reconstruction grids."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from utils.files import atomic_write_bytes
from utils.plotting.annotate import write_image_atomic
from utils.plotting.results import append_results_row, format_csv_header, format_csv_row, read_csv_table

RESULTS_KEYS = ("train/loss", "val/loss", "x/lr0")  # results.csv columns after "epoch"
GRID_ROWS = 4
PathLike = Union[str, Path]


def append_results(csv: PathLike, epoch: int, values: Sequence[float]) -> None:
    """Append one ``epoch`` row of :data:`RESULTS_KEYS` values to ``csv`` (header written first), atomically."""
    append_results_row(csv, RESULTS_KEYS, epoch, values)


def truncate_results(csv: PathLike, epoch: int) -> None:
    """Drop the rows of ``epoch`` and later from ``csv`` (a resumed run trains them again)."""
    csv = Path(csv)
    if not csv.is_file():
        return
    header, values = read_csv_table(csv)
    rows = [format_csv_row(row) for row in values if row[0] < epoch]
    atomic_write_bytes(csv, ("\n".join([format_csv_header(header), *rows]) + "\n").encode())


def plot_losses(csv: PathLike) -> Path:
    """Plot train and val loss (log scale) against the epoch from ``results.csv`` into ``results.png`` beside it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    csv = Path(csv)
    header, values = read_csv_table(csv)
    figure = Figure(figsize=(6, 4), tight_layout=True)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for name in ("train/loss", "val/loss"):
        column = values[:, header.index(name)] if values.size and name in header else np.zeros(0)
        valid = np.isfinite(column) & (column > 0)
        if valid.any():
            ax.plot(values[valid, 0], column[valid], marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked weighted MSE")
    ax.set_yscale("log")
    ax.set_title(f"autoencoder pretraining: {csv.parent.name}")
    if ax.lines:
        ax.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150)
    out = csv.with_name("results.png")
    atomic_write_bytes(out, buffer.getvalue())
    return out


def _to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float [0, 1] -> (B, H, W, 3) uint8 (1-channel images are repeated)."""
    x = images.detach().float().clamp(0, 1).mul(255).round().byte().cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).numpy()


def reconstruction_grid(inputs: torch.Tensor, reconstructions: torch.Tensor, masks: torch.Tensor,
                        targets: torch.Tensor | None = None, rows: int = GRID_ROWS, gap: int = 4) -> np.ndarray:
    """Tile up to ``rows`` samples as ``input | reconstruction | [target |] mask`` rows; returns RGB uint8 (H, W, 3).

    Args:
        inputs, reconstructions, targets: (B, 3, H, W) float in [0, 1] (targets only when they differ from inputs).
        masks: (B, 1, H, W) box masks in {0, 1}, drawn white on black.
    """
    columns = [inputs, reconstructions] + ([targets] if targets is not None else []) + [masks]
    tiles = [_to_uint8_hwc(c[:rows]) for c in columns]
    n, h, w, _ = tiles[0].shape
    grid = np.full((n * (h + gap) - gap, len(tiles) * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for col, tile in enumerate(tiles):
        for row in range(n):
            grid[row * (h + gap):row * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = tile[row]
    return grid


def save_reconstruction_grid(file: PathLike, inputs: torch.Tensor, reconstructions: torch.Tensor,
                             masks: torch.Tensor, targets: torch.Tensor | None = None) -> Path:
    """Save :func:`reconstruction_grid` as an image (format from the suffix, e.g. ``.png``), atomically."""
    return write_image_atomic(file, reconstruction_grid(inputs, reconstructions, masks, targets))
