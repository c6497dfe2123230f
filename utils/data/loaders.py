"""Training/validation data loaders (upstream ``utils.data.loaders`` API).

``create_dataloader`` builds a ``LoadImagesAndLabels`` dataset and an ``InfiniteDataLoader`` (workers stay alive
across epochs) or, with image weights, a plain ``DataLoader`` (so per-epoch changes to ``dataset.indices`` reach
freshly started workers). In DDP a ``SmartDistributedSampler`` gives each rank its fixed subset. Rank and world
size are read from ``torch.distributed`` when called, never from import-time globals.
"""

from __future__ import annotations

import ctypes
import os
import random
import sys
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils.data.augment import letterbox
from utils.data.dataset import LoadImagesAndLabels
from utils.data.labels import exif_size, verify_image_label
from utils.data.paths import IMG_FORMATS, VID_FORMATS, img2label_paths
from utils.data.sources import LoadImages, LoadScreenshots, LoadStreams  # re-exported (upstream location)
from utils.dist import torch_distributed_zero_first  # re-exported (upstream location)
from utils.logging import LOGGER

__all__ = ["create_dataloader", "InfiniteDataLoader", "SmartDistributedSampler", "seed_worker",
           "torch_distributed_zero_first", "LoadImagesAndLabels", "img2label_paths", "verify_image_label",
           "exif_size", "letterbox", "IMG_FORMATS", "VID_FORMATS", "LoadImages", "LoadStreams", "LoadScreenshots"]

GENERATOR_SEED_BASE = 6148914691236517205  # 0x5555555555555555, as upstream
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameter ids


def _dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group, else (-1, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return -1, 1


def seed_worker(worker_id: int) -> None:
    """Seed ``numpy`` and ``random`` in a loader worker from torch's per-worker seed (``initial_seed % 2**32``)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def _keep_large_buffers_in_heap() -> None:
    """glibc only: serve the worker's repeated ~1-20 MB image buffers from its heap instead of fresh mmaps.

    By default glibc maps each large array anew and returns it on free, so every sample page-faults its buffers
    (about a third of the per-sample CPU time at 640 px). Raising the mmap and trim thresholds keeps up to 64 MB
    of freed memory for reuse. Called only inside loader worker processes.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 16 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)
    except (OSError, AttributeError):  # not glibc
        pass


def init_worker(worker_id: int) -> None:
    """Worker start-up: seed, stop OpenCV spawning threads inside each worker, keep large buffers in the heap."""
    seed_worker(worker_id)
    cv2.setNumThreads(0)
    _keep_large_buffers_in_heap()


class _RepeatSampler:
    """Wrap a batch sampler and iterate it forever."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator:
        while True:
            yield from iter(self.sampler)


class InfiniteDataLoader(DataLoader):
    """DataLoader whose worker processes persist across epochs; ``len()`` is the number of batches per epoch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "batch_sampler", _RepeatSampler(self.batch_sampler))
        self.iterator = super().__iter__()

    def __len__(self) -> int:
        return len(self.batch_sampler.sampler)

    def __iter__(self) -> Iterator:
        for _ in range(len(self)):
            yield next(self.iterator)


class SmartDistributedSampler(Sampler):
    """DDP sampler over a dataset whose ``indices`` already hold this rank's fixed subset.

    Yields positions into ``dataset.indices`` (shuffled with seed + epoch, or in order), padded by repetition to
    ``ceil(len(dataset) / world_size)`` so that every rank runs the same number of steps.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        dist_rank, dist_world = _dist_rank_world()
        self.dataset, self.shuffle, self.seed, self.drop_last = dataset, shuffle, seed, drop_last
        self.num_replicas = num_replicas if num_replicas is not None else dist_world
        self.rank = rank if rank is not None else max(dist_rank, 0)
        self.epoch = 0
        full = len(dataset)
        self.num_samples = full // self.num_replicas if drop_last else -(-full // self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch used to seed the next shuffle."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        subset = len(getattr(self.dataset, "indices", range(len(self.dataset))))
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(subset, generator=generator) if self.shuffle else torch.arange(subset)
        order = order.tolist()
        if len(order) < self.num_samples:
            order = (order * (self.num_samples // max(len(order), 1) + 1))
        return iter(order[:self.num_samples])


def loader_workers(batch_size: int, workers: int) -> int:
    """Return the loader's worker count: min(CPUs per CUDA device, batch size (0 for batch 1), ``workers``)."""
    devices = torch.cuda.device_count()
    return min((os.cpu_count() or 1) // max(devices, 1), batch_size if batch_size > 1 else 0, workers)


def create_dataloader(path, imgsz: int, batch_size: int, stride: int, single_cls: bool = False,
                      hyp: dict | None = None, augment: bool = False, cache=False, pad: float = 0.0,
                      rect: bool = False, rank: int = -1, workers: int = 8, image_weights: bool = False,
                      quad: bool = False, prefix: str = "", shuffle: bool = False, seed: int = 0,
                      min_items: int = 0, nc: int | None = None) -> tuple[DataLoader, LoadImagesAndLabels]:
    """Build the dataset and its loader; returns ``(loader, dataset)``.

    Batches are ``(images uint8 (B, 3, H, W) RGB, labels (N, 6) [image_idx, cls, x, y, w, h] normalised, paths,
    shapes)``. ``cache`` is False, True/'ram' or 'disk'. ``rect`` disables shuffling (with a warning). ``quad``
    uses ``collate_fn4`` and drops the last incomplete batch. ``nc`` (optional) rejects labels with class ids
    outside the dataset's names. Workers = min(CPUs per CUDA device, batch size, ``workers``).
    """
    if rect and shuffle:
        LOGGER.warning("WARNING ⚠️ --rect is incompatible with DataLoader shuffle, setting shuffle=False")
        shuffle = False
    with torch_distributed_zero_first(rank):
        dataset = LoadImagesAndLabels(path, imgsz, batch_size, augment=augment, hyp=hyp, rect=rect,
                                      cache_images=cache, single_cls=single_cls, stride=int(stride), pad=pad,
                                      image_weights=image_weights, min_items=min_items, prefix=prefix, rank=rank,
                                      seed=seed, nc=nc)
    collate = LoadImagesAndLabels.collate_fn4 if quad else LoadImagesAndLabels.collate_fn
    return build_loader(dataset, batch_size, workers, shuffle, rank, image_weights, quad, seed, collate), dataset


def build_loader(dataset: Dataset, batch_size: int, workers: int, shuffle: bool, rank: int, image_weights: bool,
                 drop_last: bool, seed: int, collate_fn) -> DataLoader:
    """The loader of :func:`create_dataloader` for a built dataset: ``InfiniteDataLoader`` (a plain ``DataLoader``
    with image weights), a ``SmartDistributedSampler`` under DDP, seeded workers and generator."""
    batch_size = min(batch_size, len(dataset))
    num_workers = loader_workers(batch_size, workers)
    sampler = None if rank == -1 else SmartDistributedSampler(dataset, shuffle=shuffle, seed=seed)
    loader_class = DataLoader if image_weights else InfiniteDataLoader
    generator = torch.Generator()
    generator.manual_seed(GENERATOR_SEED_BASE + seed + _dist_rank_world()[0])  # global rank, -1 if not DDP
    pin_memory = os.getenv("PIN_MEMORY", "True").lower() == "true" and torch.cuda.is_available()
    return loader_class(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                        num_workers=num_workers, sampler=sampler, drop_last=drop_last, pin_memory=pin_memory,
                        collate_fn=collate_fn, worker_init_fn=init_worker, generator=generator)
