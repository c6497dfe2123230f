"""Upstream-compatible facade: re-exports the names users import from ``utils.general``. No logic lives here."""

from utils.boxes import (  # noqa: F401
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
from utils.files import ROOT, check_file, check_yaml, file_size, increment_path, yaml_load, yaml_save  # noqa: F401
from utils.logging import LOGGER, LOGGING_NAME, colorstr, emojis  # noqa: F401
from utils.ops import check_img_size, make_divisible  # noqa: F401
