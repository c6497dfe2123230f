"""Legacy YOLO heads as YAML modules: importing this registers everything the legacy YAMLs use.

- :class:`~extensions.yolov1.YOLOv1Head` + :class:`~extensions.yolov1_loss.YOLOv1Loss`
  (``extensions/cfg/yolov1*.yaml``);
- :class:`~extensions.yolov3.YOLOv3Head` + :mod:`extensions.yolov3_loss` (``extensions/cfg/yolov3*-legacy.yaml``);
- the Darknet blocks :class:`~extensions.darknet.DarknetConv` and :class:`~extensions.darknet.DarknetResidual`.

Each head implements the interface ``models.yolo.Detect`` offers the entry scripts: ``setup_model(model, ch)``,
``make_loss(model)``, an ``export`` flag and an eval output ``(decoded (N, rows, 5 + nc), raw)``.
"""

from __future__ import annotations

from extensions.darknet import DarknetConv, DarknetResidual
from extensions.yolov1 import YOLOv1Head, decode_yolov1
from extensions.yolov1_loss import YOLOv1Loss
from extensions.yolov3 import YOLOv3Head, decode_offsets
from extensions.yolov3_loss import YOLOv3Loss, make_yolov3_loss

__all__ = ["DarknetConv", "DarknetResidual", "YOLOv1Head", "YOLOv1Loss", "YOLOv3Head", "YOLOv3Loss",
           "decode_offsets", "decode_yolov1", "make_yolov3_loss"]
