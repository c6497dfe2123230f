"""Image reading and caching for the training loader: decode, RAM-budget checks and ``.npy`` disk caches."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import cv2
import numpy as np

from utils.files import atomic_write_bytes
from utils.logging import LOGGER

GIB = 1 << 30


REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}


def read_image(im_file: str, reduction: int = 1) -> np.ndarray:
    """Decode an image file to a uint8 HWC BGR array (EXIF orientation applied, truncated JPEGs decoded in part).

    ``reduction`` 2, 4 or 8 decodes at that fraction of the size (JPEG DCT scaling: ``ceil(side / reduction)``).

    Raises:
        FileNotFoundError: the file is missing or cannot be decoded.
    """
    image = cv2.imread(im_file, REDUCED_FLAGS[reduction])
    if image is None:
        raise FileNotFoundError(f"Image Not Found or unreadable: {im_file}")
    return image


def resized_shape(height: int, width: int, img_size: int) -> tuple[int, int]:
    """Return (h, w) after scaling the long side to ``img_size``: ``ceil(side * img_size / max(h, w))``."""
    ratio = img_size / max(height, width)
    if ratio == 1:
        return height, width
    return math.ceil(height * ratio), math.ceil(width * ratio)


def resize_long_side(image: np.ndarray, img_size: int, augment: bool) -> np.ndarray:
    """Resize so the long side equals ``img_size`` (LINEAR when augmenting or enlarging, else AREA)."""
    height, width = image.shape[:2]
    new_h, new_w = resized_shape(height, width, img_size)
    if (new_h, new_w) == (height, width):
        return image
    interpolation = cv2.INTER_LINEAR if augment or new_w > width else cv2.INTER_AREA
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


def available_memory() -> tuple[int, int]:
    """Return (available, total) system memory in bytes, from psutil if installed else ``/proc/meminfo``."""
    try:
        import psutil

        memory = psutil.virtual_memory()
        return int(memory.available), int(memory.total)
    except ImportError:
        pass
    fields = {}
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            fields[name] = int(value.split()[0]) * 1024
    return fields.get("MemAvailable", fields.get("MemFree", 0)), fields.get("MemTotal", 0)


def ram_cache_bytes(shapes_wh: np.ndarray, img_size: int) -> int:
    """Return the exact bytes needed to hold every image resized to ``img_size`` (shapes (n, 2) width, height)."""
    shapes_wh = np.asarray(shapes_wh, dtype=np.float64).reshape(-1, 2)
    ratio = img_size / shapes_wh.max(1)
    sizes = np.where(ratio[:, None] == 1, shapes_wh, np.ceil(shapes_wh * ratio[:, None]))
    return int((sizes[:, 0] * sizes[:, 1] * 3).sum())


def ram_cache_decision(required: int, safety_margin: float = 0.1, prefix: str = "",
                       instead: str = "not caching images. Use --cache disk or no cache instead.") -> bool:
    """Return True if ``required`` bytes fit in available memory with ``safety_margin``; log the decision (a
    refusal says what happens ``instead``)."""
    available, total = available_memory()
    fits = required * (1 + safety_margin) < available
    summary = f"{required / GIB:.2f}GB RAM required, {available / GIB:.1f}/{total / GIB:.1f}GB available"
    if fits:
        LOGGER.info(f"{prefix}{summary}, caching images ✅")
    else:
        LOGGER.warning(f"{prefix}WARNING ⚠️ --cache ram refused: {summary} (with a {safety_margin:.0%} margin); "
                       f"{instead}")
    return fits


def check_cache_ram(shapes_wh: np.ndarray, img_size: int, safety_margin: float = 0.1, prefix: str = "") -> bool:
    """Return True if caching all images in RAM fits in available memory with ``safety_margin``; log the decision."""
    return ram_cache_decision(ram_cache_bytes(shapes_wh, img_size), safety_margin, prefix)


def npy_path(im_file: str) -> Path:
    """Return the disk-cache path beside an image: same name with the suffix replaced by ``.npy``."""
    return Path(im_file).with_suffix(".npy")


def _npy_is_fresh(im_file: str, cache_file: Path) -> bool:
    try:
        return cache_file.stat().st_mtime_ns >= os.stat(im_file).st_mtime_ns
    except OSError:
        return False


def _looks_like_image_cache(cache_file: Path) -> bool:
    """True if the file is a 3-D uint8 ``.npy`` (ours or upstream's image cache); reads only the header."""
    try:
        array = np.load(cache_file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return array.dtype == np.uint8 and array.ndim == 3


def load_fresh_npy(im_file: str) -> np.ndarray | None:
    """Return the cached array for ``im_file`` if its ``.npy`` exists, is newer than the image and loads, else None."""
    cache_file = npy_path(im_file)
    if not _npy_is_fresh(im_file, cache_file):
        return None
    try:
        array = np.load(cache_file, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return array if array.dtype == np.uint8 and array.ndim == 3 else None


def write_npy_atomic(cache_file: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` via a temp file in the same folder and a rename (raises OSError)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(cache_file, buffer.getvalue())


def cache_to_disk(im_file: str) -> int:
    """Ensure a fresh ``.npy`` copy of the decoded image exists beside it; return bytes written (0 if none).

    An existing ``.npy`` that is not an image array (someone else's file) is never replaced.

    Raises:
        OSError: the folder is not writable.
    """
    cache_file = npy_path(im_file)
    if cache_file.exists() and (_npy_is_fresh(im_file, cache_file) or not _looks_like_image_cache(cache_file)):
        return 0
    image = read_image(im_file)
    write_npy_atomic(cache_file, image)
    return image.nbytes
