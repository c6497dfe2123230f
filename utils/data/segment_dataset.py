"""``LoadImagesAndLabelsAndMasks``: the YOLO polygon-label dataset for instance segmentation (upstream interface).

The detection dataset (:class:`utils.data.dataset.LoadImagesAndLabels`: label checks, versioned cache, rect batches,
RAM/disk caching, mosaic, random perspective, HSV, flips) with the polygons carried through every geometric step
and turned into masks at the end. A sample is ``(image uint8 (3, H, W) RGB, labels (n, 6) [0, cls, x, y, w, h]
normalised, path, shapes, masks)`` where ``masks`` is, at ``(H // mask_ratio, W // mask_ratio)``:

* ``overlap=True`` (upstream's default in training): (1, h, w) index mask, pixel k = the k-th label row (1-based;
  0 = background); rows are sorted by mask area, largest first (see :mod:`utils.data.masks`);
* ``overlap=False`` (``--no-overlap``): (n, h, w) one 0/1 mask per label row.

Images whose labels are boxes only (no polygon row) get each box's rectangle as its polygon (upstream would give
them empty masks); the dataset logs how many.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from utils.boxes import xyn2xy, xywhn2xyxy, xyxy2xywhn
from utils.data.augment import (
    augment_hsv,
    letterbox,
    mixup_with_segments,
    random_flips_with_masks,
    random_perspective_with_segments,
)
from utils.data.dataset import LoadImagesAndLabels, _stack_images
from utils.data.loaders import build_loader
from utils.data.masks import polygons2masks, polygons2masks_overlap
from utils.data.mosaic import load_mosaic_with_segments
from utils.dist import torch_distributed_zero_first
from utils.logging import LOGGER

__all__ = ["LoadImagesAndLabelsAndMasks", "create_dataloader"]


def box_polygons(labels: np.ndarray) -> list[np.ndarray]:
    """The rectangle (4, 2) of each label row (n, 5) [cls, x, y, w, h] normalised, as normalised polygons."""
    x, y, w, h = (labels[:, i:i + 1] for i in range(1, 5))
    corners = np.concatenate((x - w / 2, y - h / 2, x + w / 2, y - h / 2, x + w / 2, y + h / 2, x - w / 2,
                              y + h / 2), 1)
    return list(corners.reshape(-1, 4, 2).astype(np.float32))


class LoadImagesAndLabelsAndMasks(LoadImagesAndLabels):
    """YOLO polygon dataset returning masks as well (module docstring); arguments as upstream's.

    Args (beyond :class:`LoadImagesAndLabels`): downsample_ratio: ``--mask-ratio`` (masks at 1/ratio of the image
    size). overlap: one index mask per image (``not --no-overlap``).
    """

    def __init__(self, path, img_size: int = 640, batch_size: int = 16, augment: bool = False,
                 hyp: dict | None = None, rect: bool = False, image_weights: bool = False,
                 cache_images: bool | str = False, single_cls: bool = False, stride: int = 32, pad: float = 0.0,
                 min_items: int = 0, prefix: str = "", downsample_ratio: int = 1, overlap: bool = False,
                 rank: int = -1, seed: int = 0, nc: int | None = None) -> None:
        super().__init__(path, img_size, batch_size, augment, hyp, rect, image_weights, cache_images, single_cls,
                         stride, pad, min_items, prefix, rank, seed, nc)
        self.downsample_ratio = int(downsample_ratio)
        self.overlap = overlap
        boxes_only = [i for i, (labels, segments) in enumerate(zip(self.labels, self.segments, strict=True))
                      if len(labels) and len(segments) != len(labels)]
        for i in boxes_only:
            self.segments[i] = box_polygons(self.labels[i])
        if boxes_only:
            LOGGER.warning(f"{prefix}WARNING ⚠️ {len(boxes_only)} of {self.n} images have box labels without "
                           f"polygons (e.g. {self.label_files[boxes_only[0]]}): their masks are the boxes")

    def _letterboxed_with_segments(self, index: int) -> tuple[np.ndarray, np.ndarray, list, tuple]:
        """Letterboxed image, pixel xyxy labels (n, 5), pixel polygons and ``shapes`` for a non-mosaic sample."""
        image, (h0, w0), (h, w) = self.load_image(index)
        shape = self.batch_shapes[self.batch[index]] if self.rect else self.img_size
        image, ratio, pad = letterbox(image, shape, auto=False, scaleup=self.augment)
        labels = self.labels[index].astype(np.float64)
        segments = [xyn2xy(s.astype(np.float64), ratio[0] * w, ratio[1] * h, pad[0], pad[1])
                    for s in self.segments[index]]
        if labels.size:
            labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])
        if self.augment:
            keys = ("degrees", "translate", "scale", "shear", "perspective")
            image, labels, segments = random_perspective_with_segments(image, labels, segments,
                                                                       **{k: self.hyp[k] for k in keys})
        return image, labels, segments, ((h0, w0), ((h / h0, w / w0), pad))

    def masks_for(self, image_shape: Sequence[int], labels: np.ndarray,
                  segments: list) -> tuple[np.ndarray, np.ndarray]:
        """Return (masks (1 or n, h // r, w // r), labels sorted like an overlap mask) for polygons in pixels."""
        height, width = (int(v) // self.downsample_ratio for v in image_shape[:2])
        if len(segments) != len(labels):  # only when a sample's polygons did not survive (never for this class)
            segments = []
        if self.overlap:
            if not len(segments):
                return np.zeros((1, height, width), dtype=np.uint8), labels
            masks, order = polygons2masks_overlap(image_shape, segments, self.downsample_ratio)
            return masks[None], labels[order]
        if not len(segments):
            return np.zeros((len(labels), height, width), dtype=np.uint8), labels
        return polygons2masks(image_shape, segments, 1, self.downsample_ratio), labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str, tuple | None, torch.Tensor]:
        index = self.indices[index]
        hyp = self.hyp
        hsv_done = False
        if self.mosaic and random.random() < hyp["mosaic"]:
            gains, hsv_done = self.mosaic_hsv()
            image, labels, segments = load_mosaic_with_segments(self, index, gains)
            shapes = None
            if random.random() < hyp["mixup"]:
                other = load_mosaic_with_segments(self, random.choice(self.indices), gains)
                image, labels, segments = mixup_with_segments(image, labels, segments, *other)
        else:
            image, labels, segments, shapes = self._letterboxed_with_segments(index)
        masks, labels = self.masks_for(image.shape[:2], labels, segments)
        if len(labels):
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=image.shape[1], h=image.shape[0], clip=True, eps=1e-3)
        if self.augment:
            image = self.albumentations(image, labels)[0]  # pixel-level transforms only: labels stay as they are
            if not hsv_done:
                augment_hsv(image, hgain=hyp["hsv_h"], sgain=hyp["hsv_s"], vgain=hyp["hsv_v"])
            image, labels, masks = random_flips_with_masks(image, labels, masks, hyp["flipud"], hyp["fliplr"])
        labels_out = torch.zeros((len(labels), 6))
        if len(labels):
            labels_out[:, 1:] = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        chw_rgb = np.ascontiguousarray(image.transpose((2, 0, 1))[::-1])
        return (torch.from_numpy(chw_rgb), labels_out, self.im_files[index], shapes,
                torch.from_numpy(np.ascontiguousarray(masks)))

    @staticmethod
    def collate_fn(batch: list) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple, torch.Tensor]:
        """Stack images, concatenate labels (column 0 = image index in the batch) and masks along dim 0: (B, h, w)
        index masks with overlap, else (N, h, w) aligned with the label rows."""
        images, labels, paths, shapes, masks = zip(*batch, strict=True)
        for i, image_labels in enumerate(labels):
            image_labels[:, 0] = i
        return _stack_images(images), torch.cat(labels, 0), paths, shapes, torch.cat(masks, 0)


def create_dataloader(path, imgsz: int, batch_size: int, stride: int, single_cls: bool = False,
                      hyp: dict | None = None, augment: bool = False, cache=False, pad: float = 0.0,
                      rect: bool = False, rank: int = -1, workers: int = 8, image_weights: bool = False,
                      quad: bool = False, prefix: str = "", shuffle: bool = False, mask_downsample_ratio: int = 1,
                      overlap_mask: bool = False, seed: int = 0, min_items: int = 0,
                      nc: int | None = None) -> tuple[DataLoader, LoadImagesAndLabelsAndMasks]:
    """Upstream ``utils.segment.dataloaders.create_dataloader``: a segmentation dataset and its loader.

    Batches are ``(images, labels (N, 6), paths, shapes, masks)`` (see :class:`LoadImagesAndLabelsAndMasks`);
    the other arguments are those of :func:`utils.data.loaders.create_dataloader`.

    Raises:
        ValueError: ``quad`` (4-image collation has no mask counterpart).
    """
    if quad:
        raise ValueError("--quad is not supported for segmentation (its 2x2 image collation has no mask version)")
    if rect and shuffle:
        LOGGER.warning("WARNING ⚠️ --rect is incompatible with DataLoader shuffle, setting shuffle=False")
        shuffle = False
    with torch_distributed_zero_first(rank):
        dataset = LoadImagesAndLabelsAndMasks(
            path, imgsz, batch_size, augment=augment, hyp=hyp, rect=rect, cache_images=cache, single_cls=single_cls,
            stride=int(stride), pad=pad, image_weights=image_weights, min_items=min_items, prefix=prefix,
            downsample_ratio=mask_downsample_ratio, overlap=overlap_mask, rank=rank, seed=seed, nc=nc)
    collate = LoadImagesAndLabelsAndMasks.collate_fn
    return build_loader(dataset, batch_size, workers, shuffle, rank, image_weights, False, seed, collate), dataset
