"""Small numeric helpers shared by the builder, the loaders and the CLIs."""

from __future__ import annotations

import math
from typing import Sequence, Union

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
