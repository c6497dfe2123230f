"""Options of the segmentation scripts: upstream's ``segment/train.py`` and ``segment/val.py`` settings.

``SegmentTrainOptions`` is :class:`engine.train_options.TrainOptions` plus ``mask_ratio`` (ground-truth masks at
1/mask_ratio of the image, 4 = the prototype resolution) and ``no_overlap`` (one mask per instance instead of one
index mask per image); without ``--weights``/``--cfg`` it builds ``yolov5n-seg.yaml``, by default on the built-in
``shapes-seg`` dataset, into ``runs/train-seg``. ``SegValOptions`` adds the mask format of the validation loader,
``SegPredictOptions`` the ``--retina-masks`` switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Union

from engine.predictor import PredictOptions
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

    def to_dict(self) -> dict:
        """Upstream's ``vars(opt)``: every option in flag order, the mask options before ``save_dir`` (last)."""
        values = super().to_dict()
        values["save_dir"] = values.pop("save_dir")
        return values


@dataclass(frozen=True)
class SegValOptions(ValOptions):
    """:class:`ValOptions` plus the ground-truth mask format: ``overlap`` (index masks) and
    ``mask_downsample_ratio`` (masks at 1/ratio of the input; 1 for ``segment/val.py``, ``--mask-ratio`` in
    training)."""

    project: Union[str, Path] = DEFAULT_SEG_VAL_PROJECT
    overlap: bool = False
    mask_downsample_ratio: int = 1


@dataclass
class SegPredictOptions(PredictOptions):
    """``segment/predict.py``'s settings: :class:`PredictOptions` with the segmentation defaults plus
    ``retina_masks`` (masks at the original image resolution, ``process_mask_native``)."""

    weights: Any = ROOT / "yolov5s-seg.pt"
    data: Any = DEFAULT_SEG_DATA
    project: Any = ROOT / "runs" / "predict-seg"
    retina_masks: bool = False
