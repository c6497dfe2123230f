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
from utils.coco_eval import coco80_to_coco91_class  # noqa: F401
from utils.data.dataset_yaml import check_dataset, datasets_dir  # noqa: F401
from utils.dist import get_local_rank, get_rank, get_world_size, is_main_process  # noqa: F401
from utils.files import (  # noqa: F401
    ROOT,
    check_file,
    check_suffix,
    check_yaml,
    file_size,
    increment_path,
    yaml_load,
    yaml_save,
)
from utils.data.labels import NUM_THREADS  # noqa: F401
from utils.logging import LOGGER, LOGGING_NAME, colorstr, emojis  # noqa: F401
from utils.metrics import box_iou, fitness  # noqa: F401
from utils.nms import non_max_suppression  # noqa: F401
from utils.ops import check_img_size, make_divisible  # noqa: F401
from utils.optim import labels_to_class_weights, labels_to_image_weights, one_cycle  # noqa: F401
from utils.precision import cpu_has_native_bf16, select_precision  # noqa: F401
from utils.profiling import Profile  # noqa: F401
