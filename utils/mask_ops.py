"""Instance-mask operations: prototypes x coefficients -> masks, cropping, rescaling, IoU, contours.

Conventions: ``protos`` is one image's (nm, mh, mw) prototype tensor (the ``Segment`` head's second output, at 1/4 of
the network input); ``masks_in`` is (n, nm) mask coefficients (NMS output columns 6:); boxes are (n, 4) ``xyxy``.
Masks are (n, h, w). A mask pixel is on when ``sigmoid(coefficients @ prototypes) > 0.5`` inside the box.

``process_mask`` (masks on the prototype grid, optionally upsampled to the input) and ``process_mask_native`` (masks
at the original image resolution) follow upstream YOLOv5's semantics; ``scale_image`` maps masks from the
letterboxed input back to the original image.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

CV2_MAX_CHANNELS = 128  # channels per cv2.resize call (OpenCV 5 accepts at most 128, OpenCV 4 up to 512)


def box_factors(boxes: torch.Tensor, height: int, width: int,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """0/1 factors whose product is the box region: rows (n, height, 1) ``y1 <= y < y2`` and columns (n, 1, width)
    ``x1 <= x < x2``, for boxes (n, 4) xyxy in the pixel units of the (height, width) grid (pixel index = its
    left/top edge). Multiplying by both is much faster than building the (n, height, width) region."""
    x1, y1, x2, y2 = boxes[:, :, None].float().unbind(1)  # each (n, 1)
    cols = torch.arange(width, device=boxes.device, dtype=torch.float32)[None]
    rows = torch.arange(height, device=boxes.device, dtype=torch.float32)[None]
    inside_x = ((cols >= x1) & (cols < x2)).to(dtype)  # (n, w)
    inside_y = ((rows >= y1) & (rows < y2)).to(dtype)  # (n, h)
    return inside_y[:, :, None], inside_x[:, None, :]


def box_region(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Return bool (n, height, width): pixel (y, x) lies in box i, i.e. ``x1 <= x < x2`` and ``y1 <= y < y2``.

    Args:
        boxes: (n, 4) xyxy in the pixel units of the (height, width) grid (pixel index = its left/top edge).
    """
    rows, cols = box_factors(boxes, height, width, torch.uint8)
    return (rows * cols).bool()


def crop_mask(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero every mask outside its box: masks (n, h, w) any dtype, boxes (n, 4) xyxy in mask pixels; returns a new
    tensor of the masks' dtype."""
    n, h, w = masks.shape
    rows, cols = box_factors(boxes, h, w, masks.dtype)
    return masks * rows * cols


def mask_logits(protos: torch.Tensor, masks_in: torch.Tensor) -> torch.Tensor:
    """Return the (n, mh, mw) mask logits ``masks_in @ protos`` (fp32) for protos (nm, mh, mw), masks_in (n, nm)."""
    nm, mh, mw = protos.shape
    return (masks_in.float() @ protos.float().reshape(nm, -1)).view(-1, mh, mw)


def _scaled_boxes(bboxes: torch.Tensor, shape: Sequence[int], mh: int, mw: int) -> torch.Tensor:
    """Boxes (n, 4) xyxy in pixels of an image of ``shape`` (h, w), rescaled to the (mh, mw) prototype grid."""
    ih, iw = shape[:2]
    gain = bboxes.new_tensor([mw / iw, mh / ih, mw / iw, mh / ih], dtype=torch.float32)
    return bboxes.float() * gain


def process_mask(protos: torch.Tensor, masks_in: torch.Tensor, bboxes: torch.Tensor, shape: Sequence[int],
                 upsample: bool = False) -> torch.Tensor:
    """Binary instance masks: sigmoid(masks_in @ protos) cropped to each box, > 0.5.

    Args:
        protos: (nm, mh, mw) prototypes. masks_in: (n, nm) coefficients. bboxes: (n, 4) xyxy in pixels of the
            network input of size ``shape`` (h, w).
        upsample: bilinearly resize the cropped masks to ``shape`` before thresholding.

    Returns:
        bool (n, mh, mw), or (n, h, w) with ``upsample``.
    """
    logits = mask_logits(protos, masks_in)
    n, mh, mw = logits.shape
    if not n:
        return torch.zeros((0, *(tuple(shape[:2]) if upsample else (mh, mw))), dtype=torch.bool, device=logits.device)
    rows, cols = box_factors(_scaled_boxes(bboxes, shape, mh, mw), mh, mw)
    if not upsample:  # sigmoid(x) > 0.5 <=> x > 0 (and a cropped 0 stays off): no sigmoid needed
        return logits.mul_(rows).mul_(cols) > 0
    masks = logits.sigmoid_().mul_(rows).mul_(cols)
    masks = F.interpolate(masks[None], tuple(shape[:2]), mode="bilinear", align_corners=False)[0]
    return masks > 0.5


def process_mask_upsample(protos: torch.Tensor, masks_in: torch.Tensor, bboxes: torch.Tensor,
                          shape: Sequence[int]) -> torch.Tensor:
    """Binary masks (n, h, w) at the input size: upsample sigmoid(masks_in @ protos) to ``shape``, crop to the boxes
    (xyxy, input pixels), > 0.5."""
    if not len(masks_in):
        return torch.zeros((0, *shape[:2]), dtype=torch.bool, device=protos.device)
    masks = F.interpolate(mask_logits(protos, masks_in).sigmoid_()[None], tuple(shape[:2]), mode="bilinear",
                          align_corners=False)[0]
    return crop_mask(masks, bboxes) > 0.5


def _unpad_window(inner: Sequence[int], outer: Sequence[int],
                  pad: Sequence[float] | None = None) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the letterboxed image of size ``outer`` (h, w) inside a canvas ``inner``."""
    if pad is None:
        gain = min(inner[0] / outer[0], inner[1] / outer[1])
        pad = (inner[1] - outer[1] * gain) / 2, (inner[0] - outer[0] * gain) / 2
    return int(pad[1]), int(inner[0] - pad[1]), int(pad[0]), int(inner[1] - pad[0])


def process_mask_native(protos: torch.Tensor, masks_in: torch.Tensor, bboxes: torch.Tensor,
                        shape: Sequence[int]) -> torch.Tensor:
    """Binary masks (n, h0, w0) at the original image size ``shape``: the letterbox padding is removed from the
    prototype grid, the rest bilinearly resized to ``shape``, cropped to ``bboxes`` (xyxy, original pixels), > 0.5."""
    if not len(masks_in):
        return torch.zeros((0, *shape[:2]), dtype=torch.bool, device=protos.device)
    masks = mask_logits(protos, masks_in).sigmoid_()
    top, bottom, left, right = _unpad_window(masks.shape[1:], shape[:2])
    masks = masks[:, top:bottom, left:right]
    masks = F.interpolate(masks[None], tuple(shape[:2]), mode="bilinear", align_corners=False)[0]
    return crop_mask(masks, bboxes) > 0.5


def scale_image(im1_shape: Sequence[int], masks: np.ndarray, im0_shape: Sequence[int],
                ratio_pad: Sequence | None = None) -> np.ndarray:
    """Map an HWC array (e.g. masks (h, w, n)) from the letterboxed input ``im1_shape`` to the original image.

    The letterbox padding (from ``ratio_pad = (ratio, (pad_w, pad_h))`` or recomputed from the two shapes) is cut
    off and the rest resized (bilinear) to ``im0_shape`` (h0, w0). Any number of channels; returns (h0, w0, n).

    Raises:
        ValueError: ``masks`` has fewer than 2 dimensions.
    """
    if masks.ndim < 2:
        raise ValueError(f"scale_image: masks must be (h, w) or (h, w, n), got shape {masks.shape}")
    top, bottom, left, right = _unpad_window(im1_shape[:2], im0_shape[:2], None if ratio_pad is None
                                             else ratio_pad[1])
    masks = masks[top:bottom, left:right]
    size = (int(im0_shape[1]), int(im0_shape[0]))
    if masks.ndim == 2 or masks.shape[2] <= CV2_MAX_CHANNELS:
        out = cv2.resize(np.ascontiguousarray(masks), size)
    else:
        chunks = [cv2.resize(np.ascontiguousarray(masks[:, :, i:i + CV2_MAX_CHANNELS]), size)
                  for i in range(0, masks.shape[2], CV2_MAX_CHANNELS)]
        out = np.concatenate([c[:, :, None] if c.ndim == 2 else c for c in chunks], 2)
    return out[:, :, None] if out.ndim == 2 else out


def mask_iou(mask1: torch.Tensor, mask2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise IoU (N, M) of flattened binary masks mask1 (N, P) and mask2 (M, P) (0/1 or bool)."""
    a, b = mask1.float(), mask2.float()
    intersection = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - intersection
    return intersection / (union + eps)


def masks_iou(mask1: torch.Tensor, mask2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise IoU (N,) of flattened binary masks mask1 (N, P) and mask2 (N, P)."""
    a, b = mask1.float(), mask2.float()
    intersection = (a * b).sum(1)
    return intersection / (a.sum(1) + b.sum(1) - intersection + eps)


def masks2segments(masks: torch.Tensor, strategy: str = "largest") -> list[np.ndarray]:
    """Outline each binary mask (n, h, w) as one float32 (k, 2) polygon in mask pixels (x, y).

    ``strategy``: 'largest' keeps the external contour with the most points, 'concat' joins all external
    contours. An empty mask gives a (0, 2) array.
    """
    if strategy not in ("largest", "concat"):
        raise ValueError(f"masks2segments: strategy must be 'largest' or 'concat', not {strategy!r}")
    segments = []
    for mask in masks.to(torch.uint8).cpu().numpy():
        contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
        if not contours:
            segments.append(np.zeros((0, 2), dtype=np.float32))
        elif strategy == "concat":
            segments.append(np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32))
        else:
            segments.append(max(contours, key=len).reshape(-1, 2).astype(np.float32))
    return segments
