"""Cropping detections out of images (``--save-crop`` and ``Detections.crop()``) and atomic image writes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np
import torch
from PIL import Image

from utils.boxes import clip_boxes, xywh2xyxy, xyxy2xywh
from utils.files import atomic_write_bytes, increment_path

PathLike = Union[str, Path]


def save_image(file: PathLike, im: np.ndarray, bgr: bool = True, quality: int = 95) -> Path:
    """Write an HWC uint8 image atomically; the format follows the suffix (``.jpg`` uses ``quality``).

    Args:
        file: destination; its parent folder is created.
        im: HWC image, BGR when ``bgr`` else RGB.
        bgr: channel order of ``im``.
        quality: JPEG quality (JPEG files are written with 4:4:4 chroma, i.e. no subsampling).
    """
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.ascontiguousarray(im[..., ::-1] if bgr and im.ndim == 3 else im)
    buffer = io.BytesIO()
    suffix = file.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, subsampling=0)
        atomic_write_bytes(file, buffer.getvalue())
    else:
        ok, encoded = cv2.imencode(suffix or ".png", np.ascontiguousarray(rgb[..., ::-1] if rgb.ndim == 3 else rgb))
        if not ok:
            raise ValueError(f"{file}: OpenCV cannot encode images with suffix '{suffix}'")
        atomic_write_bytes(file, encoded.tobytes())
    return file


def save_one_box(xyxy: Union[Sequence, torch.Tensor], im: np.ndarray, file: PathLike = Path("im.jpg"),
                 gain: float = 1.02, pad: int = 10, square: bool = False, BGR: bool = False,  # noqa: N803
                 save: bool = True) -> np.ndarray:
    """Return (and optionally save) the crop of one box, enlarged by ``gain`` and ``pad`` pixels.

    Args:
        xyxy: box corners in pixels (4 numbers or 0-d tensors).
        im: HWC image the box refers to.
        file: crop path; an existing file is not overwritten (``name2.jpg``, ... via ``increment_path``).
        gain: size multiplier; pad: pixels added to width and height; square: use the longer side for both.
        BGR: ``im`` is BGR (as from cv2); otherwise RGB. The returned crop is always BGR.
        save: write the crop as a JPEG.
    """
    box = torch.tensor([float(v) for v in xyxy]).view(-1, 4)
    xywh = xyxy2xywh(box)
    if square:
        xywh[:, 2:] = xywh[:, 2:].max(1, keepdim=True)[0]
    xywh[:, 2:] = xywh[:, 2:] * gain + pad
    corners = clip_boxes(xywh2xyxy(xywh).long(), im.shape)
    x1, y1, x2, y2 = (int(v) for v in corners[0])
    crop = im[y1:y2, x1:x2, ::(1 if BGR else -1)]
    if save:
        target = increment_path(Path(file)).with_suffix(".jpg")
        save_image(target, crop, bgr=True)
    return crop
