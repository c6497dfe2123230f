"""Classification transforms: upstream's centre-crop inference pipeline and a native (cv2) training augmentation.

* ``classify_transforms(size)``: ``Compose([CenterCrop(size), ToTensor(), Normalize(ImageNet)])`` as upstream
  stores it in ``model.transforms`` of a classification checkpoint. It takes an HWC **BGR** uint8 image and returns a
  (3, size, size) float tensor (RGB, ImageNet-normalised).
* :class:`ClassifyAugment`: random resized crop, horizontal flip and HSV colour jitter, then the same conversion.
  It replaces upstream's ``classify_albumentations`` (same keywords) without the albumentations dependency: every
  step is one OpenCV/NumPy call on the whole image.

``CenterCrop``, ``ToTensor`` and ``LetterBox`` are pickled inside checkpoints under upstream's names
(``utils.augmentations.CenterCrop`` ...), so their ``__module__`` is that facade and their attribute names
(``h``, ``w``, ``half``, ``auto``, ``stride``) are upstream's.
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from utils.checkpoint import register_safe_globals
from utils.data.augment import IMAGENET_MEAN, IMAGENET_STD, PAD_VALUE, augment_hsv, letterbox

PICKLE_MODULE = "utils.augmentations"  # where upstream checkpoints look these classes up


class CenterCrop:
    """Crop the centred square of side ``min(h, w)`` and resize it to ``size`` (int or (h, w)) pixels, bilinear.

    Input and output are HWC uint8 arrays (channel order kept).
    """

    def __init__(self, size: int | Sequence[int] = 640):
        self.h, self.w = (size, size) if isinstance(size, int) else size

    def __call__(self, im: np.ndarray) -> np.ndarray:
        """Return the centre crop of ``im`` (h0, w0, c) resized to (h, w, c)."""
        height, width = im.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return cv2.resize(im[top:top + side, left:left + side], (self.w, self.h), interpolation=cv2.INTER_LINEAR)


class ToTensor:
    """HWC BGR uint8 array -> CHW RGB float tensor in [0, 1] (fp16 when ``half``)."""

    def __init__(self, half: bool = False):
        self.half = half

    def __call__(self, im: np.ndarray) -> torch.Tensor:
        """Return the (3, h, w) tensor of ``im`` (h, w, 3)."""
        x = torch.from_numpy(np.ascontiguousarray(im.transpose((2, 0, 1))[::-1]))
        x = x.half() if self.half else x.float()
        return x / 255.0


class LetterBox:
    """Resize the long side to ``size`` keeping the aspect ratio and pad with grey (to a ``stride`` multiple if
    ``auto``); HWC in, HWC out (the detection letterbox as a transform)."""

    def __init__(self, size: int | Sequence[int] = (640, 640), auto: bool = False, stride: int = 32):
        self.h, self.w = (size, size) if isinstance(size, int) else size
        self.auto, self.stride = auto, stride

    def __call__(self, im: np.ndarray) -> np.ndarray:
        """Return the letterboxed image."""
        return letterbox(im, (self.h, self.w), color=(PAD_VALUE,) * 3, auto=self.auto, stride=self.stride)[0]


for _cls in (CenterCrop, ToTensor, LetterBox):
    _cls.__module__ = PICKLE_MODULE
register_safe_globals(CenterCrop, ToTensor, LetterBox)


def classify_transforms(size: int = 224) -> Any:
    """Return upstream's inference transform: centre crop to ``size``, to tensor, ImageNet normalisation.

    Raises:
        TypeError: ``size`` is not an int (upstream accepts only square sizes here).
    """
    import torchvision.transforms as T

    if not isinstance(size, int):
        raise TypeError(f"classify_transforms size={size} must be an integer, not a list or tuple")
    return T.Compose([CenterCrop(size), ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def random_resized_box(height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                       attempts: int = 10) -> tuple[int, int, int, int]:
    """Return ``(top, left, h, w)`` of a crop covering a random area fraction in ``scale`` with an aspect ratio
    (w/h) log-uniform in ``ratio``; after ``attempts`` misses, the largest centred crop within ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * random.uniform(scale[0], scale[1])
        aspect = math.exp(random.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


class ClassifyAugment:
    """Training augmentation: random resized crop to ``size``, horizontal/vertical flips, HSV jitter, normalise.

    Args:
        size: output side in pixels. scale: crop area fraction range. ratio: crop aspect (w/h) range.
        hflip, vflip: flip probabilities. jitter: saturation and value gain (hue gets ``jitter / 27``, i.e. 0.015
            for 0.4, as the detection HSV defaults). mean, std: RGB normalisation.

    Call with an HWC BGR uint8 image; returns a (3, size, size) float tensor. ``t(image=im)`` returns
    ``{'image': tensor}`` (the albumentations calling convention upstream code uses).
    """

    def __init__(self, size: int = 224, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (0.75, 1.0 / 0.75), hflip: float = 0.5, vflip: float = 0.0,
                 jitter: float = 0.4, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)
        self.hflip, self.vflip, self.jitter = hflip, vflip, jitter
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255

    def crop(self, im: np.ndarray) -> np.ndarray:
        """Return the random resized crop (size, size, c) of ``im``, bilinear."""
        top, left, h, w = random_resized_box(im.shape[0], im.shape[1], self.scale, self.ratio)
        return cv2.resize(im[top:top + h, left:left + w], (self.size, self.size), interpolation=cv2.INTER_LINEAR)

    def __call__(self, im: np.ndarray | None = None, image: np.ndarray | None = None) -> Any:
        """Augment one HWC BGR uint8 image; see the class docstring for the two calling conventions."""
        source = image if im is None else im
        out = self.crop(source)
        if random.random() < self.hflip:
            out = out[:, ::-1]
        if random.random() < self.vflip:
            out = out[::-1]
        out = np.ascontiguousarray(out)
        if self.jitter:
            augment_hsv(out, hgain=self.jitter / 27, sgain=self.jitter, vgain=self.jitter)
        x = torch.from_numpy(np.ascontiguousarray(out.transpose((2, 0, 1))[::-1])).float()
        x = x.sub_(self.mean).div_(self.std)
        return {"image": x} if im is None else x


def classify_albumentations(augment: bool = True, size: int = 224, scale: Sequence[float] = (0.08, 1.0),
                            ratio: Sequence[float] = (0.75, 1.0 / 0.75), hflip: float = 0.5, vflip: float = 0.0,
                            jitter: float = 0.4, mean: Sequence[float] = IMAGENET_MEAN,
                            std: Sequence[float] = IMAGENET_STD, auto_aug: bool = False) -> Any:
    """Upstream's training-transform factory (same keywords), built natively: a :class:`ClassifyAugment`, or with
    ``augment=False`` a centre-crop transform at ``size``. ``auto_aug`` is accepted and ignored (upstream does not
    implement it either)."""
    if not augment:
        return classify_transforms(size)
    return ClassifyAugment(size, scale, ratio, hflip, vflip, jitter, mean, std)
