"""``LoadImagesAndLabels``: the YOLO-format training/validation dataset (upstream-compatible attributes and items).

A sample is ``(image uint8 (3, H, W) RGB tensor, labels (n, 6) [0, cls, x, y, w, h] normalised, image path,
shapes)`` where ``shapes = ((h0, w0), ((h / h0, w / w0), (pad_w, pad_h)))`` for letterboxed samples and None for
mosaics. Column 0 of the labels is filled with the index in the batch by ``collate_fn``.
"""

from __future__ import annotations

import random
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info
from tqdm import tqdm

from utils.boxes import xywhn2xyxy, xyxy2xywhn
from utils.data.augment import (
    Albumentations,
    augment_hsv,
    letterbox,
    mixup,
    random_flips,
    random_hsv_gains,
    random_perspective,
)
from utils.data.images import (
    GIB,
    cache_to_disk,
    check_cache_ram,
    load_fresh_npy,
    read_image,
    resize_long_side,
    resized_shape,
)
from utils.data.labels import NUM_THREADS, cache_labels, record_counts
from utils.data.mosaic import load_mosaic
from utils.data.paths import img2label_paths, list_image_files
from utils.logging import LOGGER

DEFAULT_HYP = {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5,
               "shear": 0.0, "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0,
               "copy_paste": 0.0}  # hyp.scratch-low augmentation values, used when hyp is None


def _world_size() -> int:
    """World size of the initialised default process group, else 1 (read at call time)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def label_cache_path(path: Union[str, Path, Sequence], label_files: Sequence[str]) -> Path:
    """Return where the label cache lives: ``<list>.cache`` for a ``.txt`` list, else ``<labels dir>.cache``."""
    last = Path(path[-1] if isinstance(path, (list, tuple)) else path)
    return (last if last.is_file() else Path(label_files[0]).parent).with_suffix(".cache")


def rect_batch_shapes(shapes_wh: np.ndarray, batch_size: int, img_size: int, stride: int,
                      pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Compute rectangular-training batch shapes.

    Args:
        shapes_wh: (n, 2) image (width, height), any order.

    Returns:
        (order (n,) that sorts images by aspect h/w, batch_shapes (nb, 2) [height, width] pixels, multiples of
        ``stride``). Per batch: all-wide -> [max_ar, 1], all-tall -> [1, 1 / min_ar], mixed -> [1, 1], then
        ``ceil(shape * img_size / stride + pad) * stride``.
    """
    aspect = shapes_wh[:, 1] / shapes_wh[:, 0]
    order = aspect.argsort(kind="stable")
    aspect = aspect[order]
    starts = np.arange(0, len(aspect), batch_size)
    low, high = np.minimum.reduceat(aspect, starts), np.maximum.reduceat(aspect, starts)
    relative = np.ones((len(starts), 2))
    wide, tall = high < 1, low > 1
    relative[wide, 0] = high[wide]
    relative[tall, 1] = 1 / low[tall]
    return order, np.ceil(relative * img_size / stride + pad).astype(int) * stride


def _stack_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack same-size image tensors; inside a loader worker the result is allocated in shared memory.

    Outside workers ``numpy.stack`` is used: for uint8 images it is several times faster than ``torch.stack``.
    """
    if get_worker_info() is not None:
        return default_collate(list(images))
    return torch.from_numpy(np.stack([image.numpy() for image in images]))


class LoadImagesAndLabels(Dataset):
    """YOLO-format dataset with label verification, caching, rect batches and mosaic/affine/HSV augmentation.

    Attributes (upstream names): ``im_files, label_files, labels`` (list of (n, 5) float32 [cls, x, y, w, h]
    normalised), ``shapes`` ((n, 2) original width, height), ``segments`` (per image, list of (k, 2) normalised
    polygons), ``batch`` (batch index per image), ``batch_shapes`` ((nb, 2) h, w, rect only), ``n``, ``indices``
    (sample order; resampled by the trainer for image weights; a fixed subset per rank in DDP), ``mosaic``,
    ``mosaic_border``, ``rect``.
    """

    def __init__(self, path, img_size: int = 640, batch_size: int = 16, augment: bool = False,
                 hyp: dict | None = None, rect: bool = False, image_weights: bool = False,
                 cache_images: Union[bool, str] = False, single_cls: bool = False, stride: int = 32,
                 pad: float = 0.0, min_items: int = 0, prefix: str = "", rank: int = -1, seed: int = 0,
                 nc: int | None = None) -> None:
        self.img_size, self.augment, self.stride, self.path = img_size, augment, stride, path
        self.hyp = {**DEFAULT_HYP, **(hyp or {})}
        self.image_weights = image_weights
        self.rect = False if image_weights else rect
        self.mosaic = self.augment and not self.rect
        self.mosaic_border = [-img_size // 2, -img_size // 2]
        self.direct_mosaic = True  # single-resample mosaic rendering (utils.data.mosaic_direct); False: canvas path
        self.albumentations = Albumentations(size=img_size) if augment else None
        self.im_files = list_image_files(path, prefix)
        self.label_files = img2label_paths(self.im_files)
        cache_path = label_cache_path(path, self.label_files)
        records, _ = cache_labels(self.im_files, self.label_files, cache_path, prefix, nc, verbose=rank in (-1, 0))
        self._set_records(records, cache_path, prefix)
        self._filter_min_items(min_items, prefix)
        if single_cls:
            for labels in self.labels:
                labels[:, 0] = 0
        self.n = len(self.im_files)
        self.batch = np.floor(np.arange(self.n) / batch_size).astype(int)
        self.batch_shapes = None
        if self.rect:
            self._sort_for_rect(batch_size, stride, pad)
        self.indices = np.arange(self.n)
        if rank > -1:  # each rank keeps a fixed subset (see SmartDistributedSampler)
            keep = np.random.RandomState(seed=seed).permutation(self.n) % _world_size() == rank
            self.indices = self.indices[keep]
        self.ims: list = [None] * self.n
        self.im_hw0: list = [None] * self.n
        self.im_hw: list = [None] * self.n
        self.npy_files = [Path(f).with_suffix(".npy") for f in self.im_files]
        self.cache_disk = cache_images == "disk"
        self._cache_images(cache_images, prefix)

    def _set_records(self, records: list, cache_path: Path, prefix: str) -> None:
        """Keep usable records; raise when training would see no labels at all."""
        found = record_counts(records)[0]
        usable = [r for r in records if not r.corrupt]
        if self.augment and found == 0:
            raise RuntimeError(f"{prefix}No labels found in {cache_path}, can not start training.")
        if not usable:
            raise RuntimeError(f"{prefix}All images in {cache_path.parent} are corrupt or unreadable, see warnings.")
        self.im_files = [r.im_file for r in usable]
        self.label_files = img2label_paths(self.im_files)
        self.labels = [r.labels for r in usable]
        self.shapes = np.array([r.shape for r in usable], dtype=np.float64).reshape(-1, 2)
        self.segments = [r.segments for r in usable]
        if self.augment and sum(len(x) for x in self.labels) == 0:
            raise RuntimeError(f"{prefix}All labels empty in {cache_path}, can not start training.")

    def _filter_min_items(self, min_items: int, prefix: str) -> None:
        if not min_items:
            return
        keep = [i for i, labels in enumerate(self.labels) if len(labels) >= min_items]
        LOGGER.info(f"{prefix}{len(self.im_files) - len(keep)}/{len(self.im_files)} images filtered from dataset "
                    f"(fewer than {min_items} labels)")
        self._reorder(keep)

    def _reorder(self, order: Sequence[int]) -> None:
        self.im_files = [self.im_files[i] for i in order]
        self.label_files = [self.label_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.segments = [self.segments[i] for i in order]
        self.shapes = self.shapes[np.asarray(order, dtype=int)].reshape(-1, 2)

    def _sort_for_rect(self, batch_size: int, stride: int, pad: float) -> None:
        order, self.batch_shapes = rect_batch_shapes(self.shapes, batch_size, self.img_size, stride, pad)
        self._reorder(order)

    def _cache_images(self, cache_images: Union[bool, str], prefix: str) -> None:
        """Cache decoded images in RAM (resized) or as ``.npy`` files beside the images (``'disk'``)."""
        if not cache_images:
            return
        if cache_images == "disk":
            self._cache_to_disk(prefix)
            return
        if not check_cache_ram(self.shapes[self.indices], self.img_size, prefix=prefix):
            return
        total = 0
        with ThreadPool(NUM_THREADS) as pool:
            bar = tqdm(pool.imap(lambda i: (i, self.load_image(i)), self.indices), total=len(self.indices),
                       desc=f"{prefix}Caching images", bar_format="{l_bar}{bar:10}{r_bar}")
            for i, (image, hw0, hw) in bar:
                self.ims[i], self.im_hw0[i], self.im_hw[i] = image, hw0, hw
                total += image.nbytes
                bar.desc = f"{prefix}Caching images ({total / GIB:.2f}GB ram)"

    def _cache_to_disk(self, prefix: str) -> None:
        total = 0
        files = [self.im_files[i] for i in self.indices]
        try:
            with ThreadPool(NUM_THREADS) as pool:
                bar = tqdm(pool.imap(cache_to_disk, files), total=len(files), desc=f"{prefix}Caching images",
                           bar_format="{l_bar}{bar:10}{r_bar}")
                for written in bar:
                    total += written
                    bar.desc = f"{prefix}Caching images ({total / GIB:.2f}GB disk)"
        except OSError as error:
            LOGGER.warning(f"{prefix}WARNING ⚠️ --cache disk skipped, cannot write beside the images: {error}")

    def __len__(self) -> int:
        return len(self.im_files)

    def _decode(self, i: int, reduction: int = 1) -> np.ndarray:
        """Read image ``i`` from its ``.npy`` disk cache (with ``--cache disk``) or decode it (optionally reduced)."""
        if self.cache_disk:
            image = load_fresh_npy(self.im_files[i])
            if image is not None:
                return image
        return read_image(self.im_files[i], reduction)

    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Return (image BGR resized so the long side is ``img_size``, (h0, w0) original, (h, w) resized)."""
        if self.ims[i] is not None:
            return self.ims[i], self.im_hw0[i], self.im_hw[i]
        image = self._decode(i)
        h0, w0 = image.shape[:2]
        image = resize_long_side(image, self.img_size, self.augment)
        return image, (h0, w0), image.shape[:2]

    def resized_size(self, i: int) -> tuple[int, int]:
        """(h, w) of image ``i`` after ``load_image``, from the cached original shape (no decoding)."""
        if self.im_hw[i] is not None:
            return self.im_hw[i]
        width, height = (int(v) for v in self.shapes[i])
        return resized_shape(height, width, self.img_size)

    def load_raw_image(self, i: int, reduction: int = 1) -> tuple[np.ndarray, tuple[float, float]]:
        """Return (image as stored, (sx, sy) factors mapping its pixels to the ``resized_size`` grid).

        The image is the RAM-cached resized array (factors 1), or the decoded original, optionally decoded at
        1/``reduction`` size (JPEG DCT scaling) where the factors include the reduction.
        """
        if self.ims[i] is not None:
            return self.ims[i], (1.0, 1.0)
        image = self._decode(i, reduction)
        h, w = self.resized_size(i)
        width, height = (int(v) for v in self.shapes[i])
        if reduction > 1 and image.shape[:2] == (-(-height // reduction), -(-width // reduction)):
            return image, (reduction * w / width, reduction * h / height)  # DCT-scaled: pixel i = block [fi, fi + f)
        return image, (w / image.shape[1], h / image.shape[0])

    def _letterboxed(self, index: int) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Letterboxed image, pixel xyxy labels (n, 5) and ``shapes`` for a non-mosaic sample."""
        image, (h0, w0), (h, w) = self.load_image(index)
        shape = self.batch_shapes[self.batch[index]] if self.rect else self.img_size
        image, ratio, pad = letterbox(image, shape, auto=False, scaleup=self.augment)
        labels = self.labels[index].astype(np.float64)
        if labels.size:
            labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])
        if self.augment:
            keys = ("degrees", "translate", "scale", "shear", "perspective")
            image, labels = random_perspective(image, labels, **{k: self.hyp[k] for k in keys})
        return image, labels, ((h0, w0), ((h / h0, w / w0), pad))

    def mosaic_hsv(self) -> tuple[np.ndarray | None, bool]:
        """(HSV gains to apply while rendering a mosaic, whether that completes the HSV step). HSV is fused into the
        mosaic rendering unless Albumentations must run between the two."""
        if self.albumentations.transform is not None:
            return None, False
        return random_hsv_gains(self.hyp["hsv_h"], self.hyp["hsv_s"], self.hyp["hsv_v"]), True

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str, tuple | None]:
        index = self.indices[index]
        hyp = self.hyp
        hsv_done = False
        if self.mosaic and random.random() < hyp["mosaic"]:
            gains, hsv_done = self.mosaic_hsv()
            image, labels = load_mosaic(self, index, gains)
            shapes = None
            if random.random() < hyp["mixup"]:
                image, labels = mixup(image, labels, *load_mosaic(self, random.choice(self.indices), gains))
        else:
            image, labels, shapes = self._letterboxed(index)
        if len(labels):
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=image.shape[1], h=image.shape[0], clip=True, eps=1e-3)
        if self.augment:
            image, labels = self.albumentations(image, labels)
            if not hsv_done:
                augment_hsv(image, hgain=hyp["hsv_h"], sgain=hyp["hsv_s"], vgain=hyp["hsv_v"])
            image, labels = random_flips(image, labels, hyp["flipud"], hyp["fliplr"])
        labels_out = torch.zeros((len(labels), 6))
        if len(labels):
            labels_out[:, 1:] = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        chw_rgb = np.ascontiguousarray(image.transpose((2, 0, 1))[::-1])
        return torch.from_numpy(chw_rgb), labels_out, self.im_files[index], shapes

    @staticmethod
    def collate_fn(batch: list) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple]:
        """Stack images (B, 3, H, W) uint8 and concatenate labels (N, 6) with column 0 = image index in the batch."""
        images, labels, paths, shapes = zip(*batch, strict=True)
        for i, image_labels in enumerate(labels):
            image_labels[:, 0] = i
        return _stack_images(images), torch.cat(labels, 0), paths, shapes

    @staticmethod
    def collate_fn4(batch: list) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple]:
        """Quad collate: each group of 4 samples becomes one image of twice the size.

        With probability 0.5 the first image of the group is upsampled 2x (bilinear) with its labels; otherwise
        the 4 images are tiled [[0, 2], [1, 3]] and their normalised labels offset and halved. Returns
        (images (B/4, 3, 2H, 2W), labels (N, 6), first path of each group, first shapes of each group).
        """
        images, labels, paths, shapes = zip(*batch, strict=True)
        groups = len(images) // 4
        offset_y, offset_x = torch.tensor([[0.0, 0, 0, 1, 0, 0]]), torch.tensor([[0.0, 0, 1, 0, 0, 0]])
        halve = torch.tensor([[1.0, 1, 0.5, 0.5, 0.5, 0.5]])
        images4, labels4 = [], []
        for group in range(groups):
            i = group * 4
            if random.random() < 0.5:
                upsampled = torch.nn.functional.interpolate(images[i][None].float(), scale_factor=2.0,
                                                            mode="bilinear", align_corners=False)
                images4.append(upsampled[0].to(images[i].dtype))
                group_labels = labels[i].clone()
            else:
                left = torch.cat((images[i], images[i + 1]), 1)
                right = torch.cat((images[i + 2], images[i + 3]), 1)
                images4.append(torch.cat((left, right), 2))
                group_labels = torch.cat((labels[i], labels[i + 1] + offset_y, labels[i + 2] + offset_x,
                                          labels[i + 3] + offset_y + offset_x), 0) * halve
            group_labels[:, 0] = group
            labels4.append(group_labels)
        return torch.stack(images4, 0), torch.cat(labels4, 0), paths[:groups], shapes[:groups]
