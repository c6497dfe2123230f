"""Options of the segmentation scripts: upstream's ``segment/train.py`` and ``segment/val.py`` settings.

``SegmentTrainOptions`` is :class:`engine.train_options.TrainOptions` plus ``mask_ratio`` (ground-truth masks at
1/mask_ratio of the image, 4 = the prototype resolution) and ``no_overlap`` (one mask per instance instead of one
index mask per image); without ``--weights``/``--cfg`` it builds ``yolov5n-seg.yaml``, by default on the built-in
``shapes-seg`` dataset, into ``runs/train-seg``. ``SegValOptions`` adds the mask format of the validation loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Union

from engine.train_options import TrainOptions
from engine.val_options import ValOptions
from utils.files import ROOT

DEFAULT_SEG_CFG = "yolov5n-seg.yaml"
DEFAULT_SEG_DATA = str(ROOT / "data" / "shapes-seg.yaml")
DEFAULT_SEG_TRAIN_PROJECT = ROOT / "runs" / "train-seg"
DEFAULT_SEG_VAL_PROJECT = ROOT / "runs" / "val-seg"


@dataclass
class SegmentTrainOptions(TrainOptions):
    """``segment/train.py``'s options: every detection option (``python segment/train.py --help``) plus the masks'."""

    data: str = DEFAULT_SEG_DATA
    project: str = str(DEFAULT_SEG_TRAIN_PROJECT)
    mask_ratio: int = 4
    no_overlap: bool = False

    default_cfg: ClassVar[str] = DEFAULT_SEG_CFG
    default_project: ClassVar[Path] = DEFAULT_SEG_TRAIN_PROJECT


@dataclass(frozen=True)
class SegValOptions(ValOptions):
    """:class:`ValOptions` plus the ground-truth mask format: ``overlap`` (index masks) and
    ``mask_downsample_ratio`` (masks at 1/ratio of the input; 1 for ``segment/val.py``, ``--mask-ratio`` in
    training)."""

    project: Union[str, Path] = DEFAULT_SEG_VAL_PROJECT
    overlap: bool = False
    mask_downsample_ratio: int = 1
