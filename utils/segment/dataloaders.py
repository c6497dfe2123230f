"""Upstream import path ``utils.segment.dataloaders``: the segmentation dataset, its loader and the polygon-to-mask
functions (implemented in :mod:`utils.data.segment_dataset` and :mod:`utils.data.masks`)."""

from utils.data.masks import polygon2mask, polygons2masks, polygons2masks_overlap
from utils.data.segment_dataset import LoadImagesAndLabelsAndMasks, create_dataloader

__all__ = ["LoadImagesAndLabelsAndMasks", "create_dataloader", "polygon2mask", "polygons2masks",
           "polygons2masks_overlap"]
