"""Upstream import path ``utils.augmentations``: re-exports the image and label augmentations of
:mod:`utils.data.augment` and the classification transforms of :mod:`utils.data.classify_augment` (whose
``CenterCrop``/``ToTensor``/``LetterBox`` pickle under this module's name, as in upstream checkpoints)."""

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
from utils.data.classify_augment import CenterCrop, LetterBox, ToTensor, classify_albumentations, classify_transforms

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Albumentations", "CenterCrop", "LetterBox", "ToTensor", "augment_hsv",
           "bbox_ioa", "box_candidates", "classify_albumentations", "classify_transforms", "copy_paste",
           "hist_equalize", "letterbox", "mixup", "random_perspective", "resample_segments", "segment2box"]
