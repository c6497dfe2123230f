"""Upstream import path ``utils.augmentations``: re-exports the image and label augmentations of
:mod:`utils.data.augment`."""

from utils.boxes import resample_segments, segment2box
from utils.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Albumentations,
    augment_hsv,
    bbox_ioa,
    box_candidates,
    copy_paste,
    hist_equalize,
    letterbox,
    mixup,
    random_perspective,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Albumentations", "augment_hsv", "bbox_ioa", "box_candidates",
           "copy_paste", "hist_equalize", "letterbox", "mixup", "random_perspective", "resample_segments",
           "segment2box"]
