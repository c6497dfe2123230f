"""Small numeric helpers shared by the builder, the loaders, the metrics, the plots and the CLIs."""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch

from utils.logging import LOGGER


def make_divisible(x: float, divisor: Union[int, torch.Tensor]) -> int:
    """Return the smallest multiple of ``divisor`` that is >= ``x`` (a tensor divisor uses its max)."""
    if isinstance(divisor, torch.Tensor):
        divisor = int(divisor.max())
    return math.ceil(x / divisor) * divisor


def check_img_size(imgsz: Union[int, Sequence[int]], s: int = 32, floor: int = 0) -> Union[int, list[int]]:
    """Round an image size (or each size in a list) up to a multiple of stride ``s``, at least ``floor``."""
    if isinstance(imgsz, int):
        new_size: Union[int, list[int]] = max(make_divisible(imgsz, int(s)), floor)
    else:
        imgsz = list(imgsz)
        new_size = [max(make_divisible(x, int(s)), floor) for x in imgsz]
    if new_size != imgsz:
        LOGGER.warning(f"WARNING ⚠️ --img-size {imgsz} must be multiple of max stride {s}, updating to {new_size}")
    return new_size


def smooth(y: np.ndarray, f: float = 0.05) -> np.ndarray:
    """Return y (n,) smoothed by a box filter spanning an odd number ~2 f n of points, edges padded with end values."""
    window = round(len(y) * f * 2) // 2 + 1
    pad = np.ones(window // 2)
    padded = np.concatenate((pad * y[0], y, pad * y[-1]))
    return np.convolve(padded, np.ones(window) / window, mode="valid")
