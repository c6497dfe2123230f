"""Mask drawing: coloured instance masks blended onto images, batch mosaics with masks (``train_batch*.jpg``,
``val_batch*_{labels,pred}.jpg``) and the segmentation ``results.png``.

Masks are either one 0/1 mask per instance (n, h, w) or, as the training loader's ``overlap`` format, one index mask
(h, w) per image whose pixel value k marks the image's k-th instance; any resolution (nearest-neighbour resized to
the image). Colours come from :data:`utils.plotting.annotate.colors` by class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np
import torch

from utils.plotting.annotate import _as_numpy, colors, plot_images
from utils.plotting.results import SEGMENT_PANELS, PathLike, plot_results

MASK_ALPHA = 0.5


def instance_index(masks: np.ndarray) -> np.ndarray:
    """(h, w) int32 map: 0 = background, k = the highest-numbered (1-based) instance of masks (n, h, w) covering it."""
    if not len(masks):
        return np.zeros(masks.shape[1:], dtype=np.int32)
    numbers = np.arange(1, len(masks) + 1, dtype=np.int32)[:, None, None]
    return ((np.asarray(masks) > 0) * numbers).max(0)


def overlay_masks(image: np.ndarray, index: np.ndarray, colours: np.ndarray, alpha: float = MASK_ALPHA) -> np.ndarray:
    """Blend instance colours onto an HWC uint8 image.

    Args:
        image: (H, W, 3) uint8. index: (h, w) int map, 0 = background, k = instance k (resized nearest to (H, W)).
        colours: (n, 3) colour of instance k at row k - 1, in the image's channel order.

    Returns:
        A new (H, W, 3) uint8 image.
    """
    if index.shape != image.shape[:2]:
        index = cv2.resize(index.astype(np.float32), image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    index = index.astype(np.int64)
    table = np.concatenate((np.zeros((1, 3)), np.asarray(colours, dtype=np.float64).reshape(-1, 3)), 0)
    index = np.clip(index, 0, len(table) - 1)
    blended = image * (1 - alpha) + table[index] * alpha
    return np.where(index[..., None] > 0, blended, image).round().astype(np.uint8)


def plot_images_and_masks(images, targets, masks, paths: Sequence[str] | None = None,
                          fname: Union[str, Path] = "images.jpg", names=None, max_size: int = 1920,
                          max_subplots: int = 16, overlap: bool | None = None) -> Path:
    """:func:`utils.plotting.annotate.plot_images` with each instance's mask drawn in its class colour.

    Args:
        images: (B, 3, H, W) RGB (uint8 range or 0-1 floats). targets: (N, 6) ``[image, cls, x, y, w, h]`` or (N, 7)
            with a confidence (predictions: only conf > 0.25 drawn, as their boxes).
        masks: (B, h, w) index masks (overlap format: value k = the image's k-th target row) or (N, h, w) one mask
            per target row. overlap: which of the two; None decides as upstream (a value above 1 means index
            masks), except that B index masks for N != B targets are recognised too.
    """
    images, targets = _as_numpy(images), _as_numpy(targets)
    targets = targets.reshape(-1, targets.shape[-1] if targets.ndim == 2 else 6)
    masks = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if overlap is None:
        overlap = bool(len(masks)) and (masks.max() > 1 or len(masks) == len(images) != len(targets))
    if images.size and images.max() <= 1:
        images = images * 255
    images = images.clip(0, 255).astype(np.uint8)
    for i in range(min(len(images), max_subplots)):
        rows = np.nonzero(targets[:, 0] == i)[0]
        if not len(rows) or not len(masks):
            continue
        visible = targets[rows, 6] > 0.25 if targets.shape[1] == 7 else np.ones(len(rows), dtype=bool)
        index = masks[i].astype(np.int64) if overlap else instance_index(masks[rows])
        index = np.where(np.isin(index, np.nonzero(visible)[0] + 1), index, 0)
        colours = np.array([colors(int(c)) for c in targets[rows, 1]], dtype=np.float64)
        images[i] = overlay_masks(images[i].transpose(1, 2, 0), index, colours).transpose(2, 0, 1)
    return plot_images(images, targets, paths, fname, names, max_size, max_subplots)


def plot_results_with_masks(file: PathLike = "path/to/results.csv", dir: PathLike = "") -> Path:  # noqa: A002
    """Plot a segmentation ``results.csv`` (16 panels: box and mask metrics) as ``results.png`` beside it."""
    return plot_results(file, dir, panels=SEGMENT_PANELS)
