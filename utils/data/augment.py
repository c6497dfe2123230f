"""Image and label augmentations for detection training (upstream YOLOv5 hyp semantics).

Conventions: images are ``uint8`` HWC **BGR** numpy arrays (OpenCV order); label arrays are ``(n, 5)`` rows
``[cls, x1, y1, x2, y2]`` in **pixels** unless a docstring says otherwise; segments are lists of ``(k, 2)`` pixel
polygons, one per label row. Randomness comes from Python's ``random`` (geometry, flips, choices) and
``numpy.random`` (HSV gains, mixup ratio), both seeded per worker by ``utils.data.loaders.seed_worker``.

Hyp keys used here: ``hsv_h, hsv_s, hsv_v, degrees, translate, scale, shear, perspective, flipud, fliplr,
mixup, copy_paste`` (``mosaic`` lives in ``utils.data.mosaic``).
"""

from __future__ import annotations

import math
import random
from typing import Sequence, Union

import cv2
import numpy as np

from utils.boxes import resample_segments, segment2box
from utils.logging import LOGGER, colorstr

PAD_VALUE = 114  # grey used for letterbox padding and warp borders
IMAGENET_MEAN = 0.485, 0.456, 0.406  # RGB, for classification transforms
IMAGENET_STD = 0.229, 0.224, 0.225


class Albumentations:
    """Optional Albumentations pipeline (Blur, MedianBlur, ToGray, CLAHE at p=0.01 each), used only if installed.

    Without the ``albumentations`` package (or if building the pipeline fails) calling the object returns its
    inputs unchanged, so training never requires it.
    """

    def __init__(self, size: int = 640) -> None:
        self.transform = None
        self.size = size
        prefix = colorstr("albumentations: ")
        try:
            import albumentations as album
        except ImportError:
            return
        try:
            steps = [album.Blur(p=0.01), album.MedianBlur(p=0.01), album.ToGray(p=0.01), album.CLAHE(p=0.01)]
            bbox_params = album.BboxParams(format="yolo", label_fields=["class_labels"])
            self.transform = album.Compose(steps, bbox_params=bbox_params)
            LOGGER.info(prefix + ", ".join(type(step).__name__ for step in steps))
        except Exception as error:  # an incompatible albumentations version must not stop training
            LOGGER.warning(f"{prefix}WARNING ⚠️ disabled, could not build the pipeline: {error}")

    def __call__(self, im: np.ndarray, labels: np.ndarray, p: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Return (image, labels) transformed with probability ``p``; labels (n, 5) [cls, x, y, w, h] normalised."""
        if self.transform is None or random.random() >= p:
            return im, labels
        result = self.transform(image=im, bboxes=labels[:, 1:], class_labels=labels[:, 0])
        pairs = zip(result["class_labels"], result["bboxes"], strict=True)
        new_labels = np.array([[cls, *box] for cls, box in pairs], dtype=np.float32)
        return result["image"], new_labels.reshape(-1, 5)


def random_hsv_gains(hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5) -> np.ndarray | None:
    """Draw HSV gains ``U(-1, 1) * (hgain, sgain, vgain) + 1`` (3,) from ``numpy.random``; None if all gains are 0."""
    if not (hgain or sgain or vgain):
        return None
    return np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1


def hsv_lut(gains: np.ndarray) -> np.ndarray:
    """Return the (1, 256, 3) uint8 table for HSV gains: hue ``(x * g) % 180``, saturation/value clipped to 255."""
    levels = np.arange(0, 256, dtype=np.float64)
    lut = np.empty((1, 256, 3), dtype=np.uint8)
    lut[0, :, 0] = ((levels * gains[0]) % 180).astype(np.uint8)
    lut[0, :, 1] = np.clip(levels * gains[1], 0, 255).astype(np.uint8)
    lut[0, :, 2] = np.clip(levels * gains[2], 0, 255).astype(np.uint8)
    return lut


def apply_hsv_lut(im: np.ndarray, lut: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Map a BGR uint8 image through an HSV table (see ``hsv_lut``); writes into ``out`` (may be ``im``) if given."""
    im_hsv = cv2.cvtColor(im, cv2.COLOR_BGR2HSV)
    cv2.LUT(im_hsv, lut, dst=im_hsv)
    return cv2.cvtColor(im_hsv, cv2.COLOR_HSV2BGR, dst=out)


def augment_hsv(im: np.ndarray, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5) -> np.ndarray:
    """Randomly scale hue, saturation and value of a BGR uint8 image **in place**; returns ``im``.

    Gains are ``r = U(-1, 1) * (hgain, sgain, vgain) + 1``. Hue uses OpenCV's 0-179 range and wraps modulo 180;
    saturation and value are clipped to 0-255. Implemented as one 3-channel lookup table on the HSV image.
    """
    gains = random_hsv_gains(hgain, sgain, vgain)
    if gains is not None:
        apply_hsv_lut(im, hsv_lut(gains), out=im)
    return im


def hist_equalize(im: np.ndarray, clahe: bool = True, bgr: bool = False) -> np.ndarray:
    """Return a copy of a 3-channel uint8 image with its luma equalised (CLAHE or global histogram)."""
    yuv = cv2.cvtColor(im, cv2.COLOR_BGR2YUV if bgr else cv2.COLOR_RGB2YUV)
    if clahe:
        yuv[:, :, 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(yuv[:, :, 0])
    else:
        yuv[:, :, 0] = cv2.equalizeHist(yuv[:, :, 0])
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR if bgr else cv2.COLOR_YUV2RGB)


def letterbox(im: np.ndarray, new_shape: Union[int, Sequence[int]] = (640, 640),
              color: Sequence[int] = (PAD_VALUE, PAD_VALUE, PAD_VALUE), auto: bool = True,
              scaleFill: bool = False, scaleup: bool = True,  # noqa: N803 (upstream keyword)
              stride: int = 32) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize an image keeping its aspect ratio and pad it to ``new_shape`` = (height, width).

    Args:
        im: HWC image.
        new_shape: target (height, width), or one int for a square.
        color: padding value per channel.
        auto: pad only up to the next multiple of ``stride`` (minimum rectangle) instead of the full shape.
        scaleFill: stretch to exactly ``new_shape`` without padding (ignored when ``auto``).
        scaleup: allow enlarging; if False the ratio is capped at 1 (better val mAP).
        stride: stride for ``auto``.

    Returns:
        (image, (ratio_w, ratio_h), (pad_w, pad_h)) where the pads are the half-paddings (floats) added on the
        left/top; the right/bottom side gets ``round(pad + 0.1)``, the left/top ``round(pad - 0.1)``.
    """
    height, width = im.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    ratio = min(new_shape[0] / height, new_shape[1] / width)
    if not scaleup:
        ratio = min(ratio, 1.0)
    ratios = (ratio, ratio)
    new_unpadded = int(round(width * ratio)), int(round(height * ratio))
    pad_w, pad_h = new_shape[1] - new_unpadded[0], new_shape[0] - new_unpadded[1]
    if auto:
        pad_w, pad_h = np.mod(pad_w, stride), np.mod(pad_h, stride)
    elif scaleFill:
        pad_w, pad_h = 0.0, 0.0
        new_unpadded = (new_shape[1], new_shape[0])
        ratios = (new_shape[1] / width, new_shape[0] / height)
    pad_w, pad_h = float(pad_w) / 2, float(pad_h) / 2
    if (width, height) != new_unpadded:
        im = cv2.resize(im, new_unpadded, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(pad_h - 0.1)), int(round(pad_h + 0.1))
    left, right = int(round(pad_w - 0.1)), int(round(pad_w + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=tuple(color))
    return im, ratios, (pad_w, pad_h)


def random_affine_matrix(in_shape: Sequence[int], out_shape: Sequence[int], degrees: float = 10,
                         translate: float = 0.1, scale: float = 0.1, shear: float = 10,
                         perspective: float = 0.0) -> tuple[np.ndarray, float]:
    """Draw upstream's random warp ``M = T @ S @ R @ P @ C`` mapping input pixels to output pixels.

    C moves the input centre to the origin; P adds perspective U(-p, p) to both axes; R rotates by U(-degrees,
    degrees) (counter-clockwise) and scales by U(1 - scale, 1 + scale); S shears both axes by U(-shear, shear)
    degrees; T moves the origin to U(0.5 - translate, 0.5 + translate) times the output size. Draw order matches
    upstream: perspective x/y, angle, scale, shear x/y, translate x/y.

    Args:
        in_shape: input (height, width) in pixels.
        out_shape: output (height, width) in pixels.

    Returns:
        (M (3, 3) float64, the drawn isotropic scale).
    """
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -in_shape[1] / 2, -in_shape[0] / 2
    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = random.uniform(-perspective, perspective), random.uniform(-perspective, perspective)
    angle = math.radians(random.uniform(-degrees, degrees))
    zoom = random.uniform(1 - scale, 1 + scale)
    rotation = np.eye(3)
    cos_a, sin_a = zoom * math.cos(angle), zoom * math.sin(angle)
    rotation[:2, :2] = [[cos_a, sin_a], [-sin_a, cos_a]]
    shearing = np.eye(3)
    shearing[0, 1] = math.tan(math.radians(random.uniform(-shear, shear)))
    shearing[1, 0] = math.tan(math.radians(random.uniform(-shear, shear)))
    translation = np.eye(3)
    translation[0, 2] = random.uniform(0.5 - translate, 0.5 + translate) * out_shape[1]
    translation[1, 2] = random.uniform(0.5 - translate, 0.5 + translate) * out_shape[0]
    return translation @ shearing @ rotation @ persp @ centre, zoom


def box_candidates(box1: np.ndarray, box2: np.ndarray, wh_thr: float = 2, ar_thr: float = 100,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """Return a bool mask (n,) of boxes worth keeping after augmentation.

    Args:
        box1: (4, n) xyxy boxes before augmentation (already multiplied by the augmentation scale).
        box2: (4, n) xyxy boxes after augmentation, pixels.
        wh_thr: minimum width and height in pixels (strict).
        ar_thr: maximum aspect ratio (strict).
        area_thr: minimum ratio of new to old area (strict).
    """
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def transform_points(points: np.ndarray, matrix: np.ndarray, perspective: bool) -> np.ndarray:
    """Apply a 3x3 transform to points (n, 2); divides by the homogeneous coordinate when ``perspective``."""
    homogeneous = np.ones((len(points), 3))
    homogeneous[:, :2] = points
    mapped = homogeneous @ matrix.T
    return mapped[:, :2] / mapped[:, 2:3] if perspective else mapped[:, :2]


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray, width: int, height: int,
                    perspective: bool = False) -> np.ndarray:
    """Map xyxy pixel boxes (n, 4) through ``matrix``: bounding box of the 4 mapped corners, clipped to the image."""
    n = len(boxes)
    corners = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
    mapped = transform_points(corners, matrix, perspective).reshape(n, 8)
    xs, ys = mapped[:, 0::2], mapped[:, 1::2]
    new = np.stack((xs.min(1), ys.min(1), xs.max(1), ys.max(1)), axis=1)
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
    return new


def transform_segments(segments: Sequence[np.ndarray], matrix: np.ndarray, width: int, height: int,
                       perspective: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Map polygons through ``matrix`` after resampling each to 1000 points.

    Returns:
        (xyxy boxes (n, 4) of the mapped points inside the image, the mapped polygons (1000, 2) each).
    """
    resampled = resample_segments(list(segments))
    mapped = [transform_points(segment, matrix, perspective) for segment in resampled]
    boxes = np.array([segment2box(segment, width, height) for segment in mapped], dtype=np.float64)
    return boxes.reshape(-1, 4), mapped


def warp_targets(targets: np.ndarray, segments: Sequence[np.ndarray], matrix: np.ndarray, zoom: float,
                 width: int, height: int, perspective: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Transform label rows [cls, x1, y1, x2, y2] (pixels) and drop boxes that became too small or thin.

    Polygons are used for the new boxes when there is one per row (then the area threshold is 0.01, else 0.10).

    Returns:
        (surviving rows (m, 5), their polygons mapped through ``matrix`` (each resampled to 1000 points, not
        clipped), or [] when the boxes were used).
    """
    n = len(targets)
    if not n:
        return targets, []
    use_segments = len(segments) == n and n > 0
    mapped: list[np.ndarray] = []
    if use_segments:
        new_boxes, mapped = transform_segments(segments, matrix, width, height, perspective)
    else:
        new_boxes = transform_boxes(targets[:, 1:5], matrix, width, height, perspective)
    keep = box_candidates(targets[:, 1:5].T * zoom, new_boxes.T, area_thr=0.01 if use_segments else 0.10)
    targets = targets[keep]
    targets[:, 1:5] = new_boxes[keep]
    return targets, [segment for segment, kept in zip(mapped, keep, strict=True) if kept] if use_segments else []


def warp_labels(targets: np.ndarray, segments: Sequence[np.ndarray], matrix: np.ndarray, zoom: float,
                width: int, height: int, perspective: bool = False) -> np.ndarray:
    """:func:`warp_targets` without the polygons: the surviving rows (m, 5) [cls, x1, y1, x2, y2] pixels."""
    return warp_targets(targets, segments, matrix, zoom, width, height, perspective)[0]


def random_perspective_with_segments(im: np.ndarray, targets: np.ndarray = (), segments: Sequence[np.ndarray] = (),
                                     degrees: float = 10, translate: float = 0.1, scale: float = 0.1,
                                     shear: float = 10, perspective: float = 0.0,
                                     border: Sequence[int] = (0, 0)) -> tuple[np.ndarray, np.ndarray, list]:
    """:func:`random_perspective` that also returns the surviving polygons, mapped (upstream's segmentation
    version): ``(image, targets (m, 5) [cls, x1, y1, x2, y2] pixels, polygons (1000, 2) pixels or [])``."""
    height, width = im.shape[0] + border[0] * 2, im.shape[1] + border[1] * 2
    matrix, zoom = random_affine_matrix(im.shape[:2], (height, width), degrees, translate, scale, shear,
                                        perspective)
    if border[0] or border[1] or (matrix != np.eye(3)).any():
        fill = (PAD_VALUE, PAD_VALUE, PAD_VALUE)
        if perspective:
            im = cv2.warpPerspective(im, matrix, dsize=(width, height), borderValue=fill)
        else:
            im = cv2.warpAffine(im, matrix[:2], dsize=(width, height), borderValue=fill)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 5)
    return im, *warp_targets(targets, segments, matrix, zoom, width, height, bool(perspective))


def random_perspective(im: np.ndarray, targets: np.ndarray = (), segments: Sequence[np.ndarray] = (),
                       degrees: float = 10, translate: float = 0.1, scale: float = 0.1, shear: float = 10,
                       perspective: float = 0.0, border: Sequence[int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Randomly rotate, scale, shear, translate and (optionally) perspective-warp an image and its labels.

    Args:
        im: HWC uint8 image.
        targets: (n, 5) [cls, x1, y1, x2, y2] pixels.
        segments: optional polygons (k, 2) in pixels, one per target row.
        border: (pad_h, pad_w) added on each side; the output is ``(h + 2 * pad_h, w + 2 * pad_w)`` (negative
            values crop, e.g. ``-s // 2`` turns a 2s mosaic into s).

    Returns:
        (warped image, surviving targets (m, 5) [cls, x1, y1, x2, y2] pixels in the output image).
    """
    im, targets, _ = random_perspective_with_segments(im, targets, segments, degrees, translate, scale, shear,
                                                      perspective, border)
    return im, targets


def bbox_ioa(box: np.ndarray, boxes: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Return the intersection of one xyxy box (4,) with boxes (n, 4) divided by each box's area, shape (n,)."""
    inter_w = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(0)
    inter_h = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(0)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + eps
    return inter_w * inter_h / areas


def copy_paste(im: np.ndarray, labels: np.ndarray, segments: list[np.ndarray],
               p: float = 0.5) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Paste left-right mirrored copies of ``round(p * n)`` random instances (needs polygons), in place on ``im``.

    A mirrored instance is kept only if it overlaps every existing box by IoA < 0.30. Labels are (n, 5)
    [cls, x1, y1, x2, y2] pixels; returns (image, labels, segments) with the new instances appended.
    """
    n = len(segments)
    if not p or not n:
        return im, labels, segments
    height, width = im.shape[:2]
    mask = np.zeros(im.shape[:2], dtype=np.uint8)
    for j in random.sample(range(n), k=round(p * n)):
        cls, x1, y1, x2, y2 = labels[j]
        mirrored_box = np.array([width - x2, y1, width - x1, y2])
        if (bbox_ioa(mirrored_box, labels[:, 1:5]) < 0.30).all():
            labels = np.concatenate((labels, [[cls, *mirrored_box]]), 0)
            segments.append(np.concatenate((width - segments[j][:, 0:1], segments[j][:, 1:2]), 1))
            cv2.drawContours(mask, [segments[j].astype(np.int32)], -1, 1, cv2.FILLED)
    selected = cv2.flip(mask, 1).astype(bool)
    im[selected] = cv2.flip(im, 1)[selected]
    return im, labels, segments


def mixup(im: np.ndarray, labels: np.ndarray, im2: np.ndarray,
          labels2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend two same-size images with ratio r ~ Beta(32, 32) and concatenate their labels (MixUp)."""
    ratio = np.random.beta(32.0, 32.0)
    blended = cv2.addWeighted(im, ratio, im2, 1.0 - ratio, 0.0)
    return blended, np.concatenate((labels, labels2), 0)


def mixup_with_segments(im: np.ndarray, labels: np.ndarray, segments: list, im2: np.ndarray, labels2: np.ndarray,
                        segments2: list) -> tuple[np.ndarray, np.ndarray, list]:
    """:func:`mixup` that also concatenates the polygons of the two samples (upstream's segmentation version)."""
    blended, labels = mixup(im, labels, im2, labels2)
    return blended, labels, [*segments, *segments2]


def random_flips(im: np.ndarray, labels: np.ndarray, flipud: float, fliplr: float) -> tuple[np.ndarray, np.ndarray]:
    """Flip an image up-down with probability ``flipud`` and left-right with ``fliplr``.

    Labels are (n, 5) [cls, x, y, w, h] **normalised** and are modified in place. The image is returned as a
    flipped view (no copy); the caller's later contiguous copy materialises it.
    """
    im, labels, _ = random_flips_with_masks(im, labels, None, flipud, fliplr)
    return im, labels


def random_flips_with_masks(im: np.ndarray, labels: np.ndarray, masks: np.ndarray | None, flipud: float,
                            fliplr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`random_flips` that flips masks (m, h, w) (any resolution) with the image; returns flipped views."""
    if random.random() < flipud:
        im = im[::-1]
        masks = masks[:, ::-1] if masks is not None else None
        if len(labels):
            labels[:, 2] = 1 - labels[:, 2]
    if random.random() < fliplr:
        im = im[:, ::-1]
        masks = masks[:, :, ::-1] if masks is not None else None
        if len(labels):
            labels[:, 1] = 1 - labels[:, 1]
    return im, labels, masks
