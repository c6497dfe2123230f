"""Upstream import path ``utils.general``: re-exports, from the focused modules, the names upstream's module has.

Only upstream names are exported (``__all__``, pinned by tests/compat/test_facades.py); project helpers are
imported from their own modules (``utils.dist``, ``utils.precision``, ``utils.data.dataset_yaml`` ...).
"""

from utils.boxes import (
    clip_boxes,
    clip_segments,
    resample_segments,
    scale_boxes,
    scale_segments,
    segment2box,
    segments2boxes,
    xyn2xy,
    xywh2xyxy,
    xywhn2xyxy,
    xyxy2xywh,
    xyxy2xywhn,
)
from utils.checkpoint import strip_optimizer
from utils.coco_eval import coco80_to_coco91_class
from utils.data.dataset_yaml import check_dataset
from utils.data.labels import NUM_THREADS
from utils.files import ROOT, check_file, check_suffix, check_yaml, file_size, increment_path, yaml_load, yaml_save
from utils.logging import LOGGER, LOGGING_NAME, colorstr, emojis
from utils.metrics import box_iou, fitness
from utils.nms import non_max_suppression
from utils.ops import check_img_size, make_divisible
from utils.optim import labels_to_class_weights, labels_to_image_weights, one_cycle
from utils.profiling import Profile

__all__ = [
    "LOGGER", "LOGGING_NAME", "NUM_THREADS", "ROOT", "Profile", "box_iou", "check_dataset", "check_file",
    "check_img_size", "check_suffix", "check_yaml", "clip_boxes", "clip_segments", "coco80_to_coco91_class", "colorstr",
    "emojis", "file_size", "fitness", "increment_path", "labels_to_class_weights", "labels_to_image_weights",
    "make_divisible", "non_max_suppression", "one_cycle", "resample_segments", "scale_boxes", "scale_segments",
    "segment2box", "segments2boxes", "strip_optimizer", "xyn2xy", "xywh2xyxy", "xywhn2xyxy", "xyxy2xywh",
    "xyxy2xywhn", "yaml_load", "yaml_save",
]
