"""Upstream import path ``utils.dataloaders``: re-exports the loaders, datasets and inference sources of
:mod:`utils.data`."""

from utils.data.augment import letterbox
from utils.data.classify import ClassificationDataset, create_classification_dataloader
from utils.data.dataset import LoadImagesAndLabels
from utils.data.labels import exif_size, verify_image_label
from utils.data.loaders import InfiniteDataLoader, SmartDistributedSampler, create_dataloader, seed_worker
from utils.data.paths import IMG_FORMATS, VID_FORMATS, img2label_paths
from utils.data.sources import LoadImages, LoadScreenshots, LoadStreams
from utils.dist import torch_distributed_zero_first

__all__ = ["IMG_FORMATS", "VID_FORMATS", "ClassificationDataset", "InfiniteDataLoader", "LoadImages",
           "LoadImagesAndLabels", "LoadScreenshots", "LoadStreams", "SmartDistributedSampler",
           "create_classification_dataloader", "create_dataloader", "exif_size",
           "img2label_paths", "letterbox", "seed_worker", "torch_distributed_zero_first", "verify_image_label"]
