"""Upstream import path ``utils.segment.general``: re-exports the mask operations of :mod:`utils.mask_ops`."""

from utils.mask_ops import (
    crop_mask,
    mask_iou,
    masks2segments,
    masks_iou,
    process_mask,
    process_mask_native,
    process_mask_upsample,
    scale_image,
)

__all__ = ["crop_mask", "mask_iou", "masks2segments", "masks_iou", "process_mask", "process_mask_native",
           "process_mask_upsample", "scale_image"]
