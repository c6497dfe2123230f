"""Steps every prediction path shares: uint8 images to a model batch, NMS settings, boxes back to the original
image, and a per-class count text.

Used by the engine's ``Predictor`` (detect.py, tracking) and by hub's ``AutoShape``; nothing here knows about
loaders, writers or model files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from utils.boxes import scale_boxes
from utils.mask_ops import process_mask, process_mask_native, scale_image
from utils.nms import non_max_suppression

__all__ = ["NmsSettings", "class_counts", "masks_to_original", "scale_to_original", "to_input_tensor"]


def to_input_tensor(im: np.ndarray, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Return a uint8 CHW (or BCHW) array as a BCHW ``dtype`` tensor on ``device``, divided by 255 (range [0, 1])."""
    x = torch.from_numpy(im).to(device).to(dtype) / 255
    return x[None] if x.ndim == 3 else x


@dataclass(frozen=True)
class NmsSettings:
    """Thresholds of one NMS call (see :func:`utils.nms.non_max_suppression` for their meaning).

    Attributes:
        conf_thres: keep scores above this, in [0, 1]. iou_thres: suppression IoU, in [0, 1].
        classes: class ids to keep (None keeps all). agnostic: suppress across classes.
        multi_label: one detection per class above ``conf_thres`` per box. max_det: detections per image.
    """

    conf_thres: float = 0.25
    iou_thres: float = 0.45
    classes: Sequence[int] | None = None
    agnostic: bool = False
    multi_label: bool = False
    max_det: int = 1000

    def apply(self, prediction: Any, nm: int = 0) -> list[torch.Tensor]:
        """Return per image an (n, 6 + nm) tensor ``[x1, y1, x2, y2, conf, cls, mask coefficients...]`` (input
        pixels, conf descending)."""
        return non_max_suppression(prediction, self.conf_thres, self.iou_thres, self.classes, self.agnostic,
                                   self.multi_label, max_det=self.max_det, nm=nm)


def scale_to_original(det: torch.Tensor, input_shape: Sequence[int], original_shape: Sequence[int],
                      round_boxes: bool = False) -> torch.Tensor:
    """Map the xyxy boxes of ``det`` (n, 6+) **in place** from the letterboxed input (h, w) to the original image.

    Boxes are clipped to ``original_shape`` (h, w[, c]) and, with ``round_boxes``, rounded to whole pixels.
    Returns ``det``.
    """
    if round_boxes:
        det[:, :4] = scale_boxes(input_shape, det[:, :4], original_shape).round()
    else:
        scale_boxes(input_shape, det[:, :4], original_shape)
    return det


def masks_to_original(det: torch.Tensor, protos: torch.Tensor, input_shape: Sequence[int],
                      original_shape: Sequence[int], retina: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn one image's segmentation detections into boxes and masks of the original image.

    Args:
        det: (n, 6 + nm) NMS rows (input pixels). protos: (nm, mh, mw) that image's prototypes.
        input_shape: letterboxed input (h, w). original_shape: original image (h0, w0[, c]).
        retina: compute the masks at the original resolution (``process_mask_native``, upstream's
            ``--retina-masks``); otherwise at the input size (``process_mask`` upsampled), then mapped back.

    Returns:
        ((n, 6) ``[x1, y1, x2, y2, conf, cls]`` original pixels, rounded; bool masks (n, h0, w0)).
    """
    h0, w0 = (int(v) for v in original_shape[:2])
    if not len(det):
        return det[:, :6], torch.zeros((0, h0, w0), dtype=torch.bool, device=det.device)
    det = det.clone()
    if retina:
        det[:, :4] = scale_boxes(input_shape, det[:, :4], original_shape).round()
        return det[:, :6], process_mask_native(protos, det[:, 6:], det[:, :4], (h0, w0))
    masks = process_mask(protos, det[:, 6:], det[:, :4], input_shape, upsample=True)
    det[:, :4] = scale_boxes(input_shape, det[:, :4], original_shape).round()
    native = scale_image(input_shape, masks.permute(1, 2, 0).to(torch.uint8).cpu().numpy(), (h0, w0))
    return det[:, :6], torch.from_numpy(native).permute(2, 0, 1).to(det.device, torch.bool)


def class_counts(det: torch.Tensor, names: Mapping[int, str]) -> list[str]:
    """Return ``['2 persons', '1 tie']`` for the detections (n, 6) per class (ascending class id)."""
    classes, counts = det[:, 5].unique(return_counts=True)
    pairs = zip(classes.tolist(), counts.tolist(), strict=True)
    return [f"{n} {names[int(c)]}{'s' * (n > 1)}" for c, n in pairs]
