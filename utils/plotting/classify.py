"""Pictures of classification runs: image grids with class names, and top-5 text on predicted images."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence, Union

import cv2
import numpy as np
import torch

from utils.data.augment import IMAGENET_MEAN, IMAGENET_STD
from utils.plotting.annotate import Annotator, write_image_atomic


def denormalize(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) ImageNet-normalised RGB float -> (B, H, W, 3) RGB uint8."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (images.detach().float().cpu() * std + mean).clamp(0, 1).mul(255).round().byte()
    return x.permute(0, 2, 3, 1).numpy()


def plot_classify_images(images: torch.Tensor, labels: Sequence[int], names: Mapping[int, str],
                         path: Union[str, Path], preds: Sequence[int] | None = None, max_images: int = 25,
                         tile: int = 160) -> Path:
    """Save up to ``max_images`` normalised images as a square grid, each titled with its class name, or with
    ``preds`` ``true / predicted`` (green when right, red when wrong); returns the file written (atomically)."""
    rgb = denormalize(images[:max_images])
    count = len(rgb)
    columns = max(math.ceil(count**0.5), 1)
    grid = np.full((columns * tile, columns * tile, 3), 255, dtype=np.uint8)
    for i in range(count):
        cell = np.ascontiguousarray(cv2.resize(rgb[i], (tile, tile), interpolation=cv2.INTER_AREA))
        annotator = Annotator(cell, line_width=1)
        true = str(names.get(int(labels[i]), labels[i]))
        if preds is None:
            annotator.text((3, 3), true, txt_color=(255, 255, 255))
        else:
            guess = str(names.get(int(preds[i]), preds[i]))
            colour = (40, 220, 40) if int(preds[i]) == int(labels[i]) else (240, 40, 40)
            annotator.text((3, 3), f"{true} / {guess}", txt_color=colour)
        y, x = (i // columns) * tile, (i % columns) * tile
        grid[y:y + tile, x:x + tile] = annotator.result()
    return write_image_atomic(path, grid)


def top5_text(probs: torch.Tensor, names: Mapping[int, str], k: int = 5) -> list[str]:
    """Return ``'name 0.91'`` lines of the ``k`` most probable classes of one (nc,) probability vector."""
    values, indices = probs.float().topk(min(k, len(probs)))
    return [f"{names.get(int(j), j)} {float(v):.2f}" for v, j in zip(values.tolist(), indices.tolist(), strict=True)]


def draw_top5(im: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Return a copy of ``im`` (HWC uint8) with the ``lines`` written at the top-left, one per line."""
    out = np.ascontiguousarray(im.copy())
    annotator = Annotator(out)
    step = max(round(sum(out.shape[:2]) / 2 * 0.035), 12) + 4
    for row, line in enumerate(lines):
        annotator.text((12, 8 + row * step), line, txt_color=(255, 255, 255))
    return annotator.result()
