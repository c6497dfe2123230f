"""ImageNet-style classification data: dataset lookup, checked class folders, ``ClassificationDataset`` and its loader.

A dataset is a folder with ``train/`` and ``val/`` (or ``test/``) splits, each holding one subfolder per class
(images anywhere below it). ``--data`` may name that folder, a YAML (``path``, ``train``, ``val``, optional
``test``, ``names``, ``builtin``, ``crop_scale``), a built-in name (``shapes-cls``) or a folder under
``DATASETS_DIR``. Nothing is downloaded: a missing dataset fails at once saying where to put it.

Every image is verified before training (readable, supported format, at least 10x10 px): bad ones are skipped,
named in a warning and counted in ``Scanning <split>... N images, K corrupt``. A class folder without images in the
training split, or a validation class the training split does not have, is an error naming the folder.

Samples are ``(image (3, imgsz, imgsz) float RGB, ImageNet-normalised; class index)``; training images get
:class:`utils.data.classify_augment.ClassifyAugment`, others the centre crop of ``classify_transforms``.
"""

from __future__ import annotations

import io
import os
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from utils.data.classify_augment import ClassifyAugment, classify_transforms
from utils.data.dataset_yaml import datasets_dir
from utils.data.images import cache_to_disk, load_fresh_npy, ram_cache_decision, read_image
from utils.data.labels import NUM_THREADS, check_image, files_hash
from utils.data.loaders import GENERATOR_SEED_BASE, InfiniteDataLoader, init_worker, loader_workers
from utils.data.paths import has_image_suffix
from utils.dist import torch_distributed_zero_first
from utils.files import ROOT, atomic_write_bytes, check_yaml, yaml_load
from utils.logging import LOGGER

PathLike = Union[str, Path]
DEFAULT_CROP_SCALE = (0.08, 1.0)


class ClassificationDataError(ValueError):
    """A classification dataset is missing or malformed; the message names the folder, file or field."""


def _resolve_root(data: PathLike) -> tuple[dict, Path]:
    """Return ``(yaml dict or {}, dataset root)`` for a folder, a YAML, a built-in name or a DATASETS_DIR name."""
    text = str(data)
    is_yaml = text.lower().endswith((".yaml", ".yml"))
    if is_yaml or (ROOT / "data" / f"{text}.yaml").is_file():
        yaml_file = check_yaml(text if is_yaml else str(ROOT / "data" / f"{text}.yaml"))
        spec = yaml_load(yaml_file)
        if spec.get("builtin") and not spec.get("path"):
            root = datasets_dir() / str(spec["builtin"])
        else:
            root = Path(str(spec.get("path") or Path(yaml_file).parent))
            root = root if root.is_absolute() else (ROOT / root).resolve()
        return spec, root
    for candidate in (Path(text), datasets_dir() / text):
        if candidate.is_dir():
            return {}, candidate.resolve()
    raise ClassificationDataError(
        f"--data {text}: no such folder, YAML or dataset under {datasets_dir()}. Nothing is downloaded: put an "
        f"ImageNet-style folder (train/<class>/*.jpg and val/<class>/*.jpg) at {datasets_dir() / text} or pass its "
        f"path; 'data/shapes-cls.yaml' is the built-in dataset.")


def _split_path(spec: dict, root: Path, split: str) -> Path | None:
    if spec.get(split):
        path = Path(str(spec[split]))
        return path if path.is_absolute() else root / path
    return root / split if (root / split).is_dir() else None


def _names_from(spec: dict, train: Path) -> list[str]:
    """Class names: the YAML's ``names`` (list or {index: name}) if given, else the sorted training subfolders."""
    names = spec.get("names")
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    return sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_cls_dataset(data: PathLike, require_train: bool = True) -> dict:
    """Find (generating a built-in one if needed) and check a classification dataset; returns its description.

    Args:
        data: a folder, YAML, built-in name or DATASETS_DIR name (module docstring).
        require_train: False for validation only: the ``train/`` split may be missing (class names then come from
            the YAML or the validation split's folders).

    Returns:
        ``{'path': root, 'train': dir or None, 'val': dir, 'test': dir or None, 'names': {i: name}, 'nc': n,
        'crop_scale': (min, max)}``; ``val`` falls back to ``test`` when there is no ``val/``.

    Raises:
        ClassificationDataError: the dataset, its ``train/`` split (when required) or a validation split is
            missing, or it has no class folders.
    """
    spec, root = _resolve_root(data)
    if spec.get("builtin"):
        from utils.data.builtin import ensure_builtin_dataset

        ensure_builtin_dataset(str(spec["builtin"]), root)
    train = _split_path(spec, root, "train")
    if require_train and (train is None or not train.is_dir()):
        raise ClassificationDataError(f"--data {data}: training split {train or root / 'train'} not found; expected "
                                      f"{root}/train/<class>/*.jpg")
    val, test = _split_path(spec, root, "val"), _split_path(spec, root, "test")
    val = val if val is not None and val.is_dir() else test
    if val is None or not val.is_dir():
        raise ClassificationDataError(f"--data {data}: no validation split: expected {root}/val/<class>/ or "
                                      f"{root}/test/<class>/")
    has_train = train is not None and train.is_dir()
    names = _names_from(spec, train if has_train else val)
    if not names:
        raise ClassificationDataError(f"--data {data}: {train if has_train else val} has no class subfolders "
                                      f"(expected <split>/<class>/*.jpg)")
    scale = tuple(float(x) for x in spec.get("crop_scale", DEFAULT_CROP_SCALE))
    return {"path": root, "train": str(train) if has_train else None, "val": str(val),
            "test": str(test) if test else None, "names": dict(enumerate(names)), "nc": len(names),
            "crop_scale": scale}


def list_class_images(split: PathLike, classes: Sequence[str] | dict, require_all: bool = True,
                      prefix: str = "") -> list[tuple[str, int]]:
    """Return sorted ``(image path, class index)`` pairs of a split (images anywhere below each class folder).

    Raises:
        ClassificationDataError: a class folder has no images or (``require_all``) is missing, or the split holds
            a class folder not in ``classes`` (its index would be unknown).
    """
    split = Path(split)
    classes = [str(name) for name in (classes.values() if isinstance(classes, dict) else classes)]
    index = {name: i for i, name in enumerate(classes)}
    present = sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [name for name in present if name not in index]
    if unknown:
        raise ClassificationDataError(f"{prefix}{split}: class folder(s) {', '.join(unknown)} are not among the "
                                      f"{len(classes)} training classes ({', '.join(classes[:10])}...)")
    samples: list[tuple[str, int]] = []
    for name in classes:
        folder = split / name
        if not folder.is_dir():
            if require_all:
                raise ClassificationDataError(f"{prefix}class folder {folder} not found")
            LOGGER.warning(f"{prefix}WARNING ⚠️ {split} has no folder for class '{name}'")
            continue
        files = sorted(str(p) for p in folder.rglob("*") if p.is_file() and has_image_suffix(p))
        if not files:
            raise ClassificationDataError(f"{prefix}class folder {folder} contains no images (supported: jpg, png, "
                                          f"bmp, tif, webp, ...); remove it or add images")
        samples += [(f, index[name]) for f in files]
    return samples


def _check_one(path: str) -> tuple[tuple[int, int] | None, str]:
    try:
        shape, warning = check_image(path)
        return shape, f"{path}: {warning}" if warning else ""
    except Exception as error:  # any unreadable file is reported and skipped, never fatal
        return None, f"{path}: ignoring corrupt image: {error}"


def verify_images(paths: Sequence[str], prefix: str = "", workers: int = NUM_THREADS) -> tuple[np.ndarray, np.ndarray]:
    """Check every image in parallel; returns ``(ok (n,) bool, (w, h) shapes (n, 2), zeros where not ok)``.

    Each corrupt image and each warning (truncated JPEG) is logged with the file name.
    """
    with ThreadPool(max(1, workers)) as pool:
        results = pool.map(_check_one, list(paths), chunksize=64)
    ok = np.zeros(len(results), dtype=bool)
    shapes = np.zeros((len(results), 2), dtype=np.int64)
    for i, (shape, message) in enumerate(results):
        if message:
            LOGGER.warning(f"{prefix}WARNING ⚠️ {message}")
        if shape is not None:
            ok[i], shapes[i] = True, shape
    return ok, shapes


CACHE_VERSION = "cls-images-1"


def _load_cache(cache_path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(cache_path, allow_pickle=False) as data:
            if str(data["version"]) == CACHE_VERSION and str(data["hash"]) == key:
                return data["ok"], data["shapes"]
    except Exception:  # missing, foreign or damaged caches are rebuilt
        pass
    return None


def cached_verify(samples: Sequence[tuple[str, int]], cache_path: Path,
                  prefix: str = "") -> tuple[list[tuple[str, int]], np.ndarray, int]:
    """Verify the images of ``samples`` once; returns ``(usable samples, their (w, h) shapes, corrupt count)``.

    Results are cached in ``cache_path`` (an ``.npz`` without pickles, written atomically) under a version and a
    hash of every image's path, size and modification time. A valid cache skips the check (warnings are not
    repeated); the summary line ``Scanning ... N images, K corrupt`` is always logged.
    """
    paths = [path for path, _ in samples]
    key = files_hash(paths)
    cached = _load_cache(cache_path, key)
    if cached is not None and len(cached[0]) == len(samples):
        ok, shapes = cached
    else:
        ok, shapes = verify_images(paths, prefix)
        buffer = io.BytesIO()
        np.savez(buffer, version=np.array(CACHE_VERSION), hash=np.array(key), ok=ok, shapes=shapes)
        try:
            atomic_write_bytes(cache_path, buffer.getvalue())
        except OSError as error:
            LOGGER.warning(f"{prefix}WARNING ⚠️ Cache directory {cache_path.parent} is not writeable: {error}")
    corrupt = int((~ok).sum())
    LOGGER.info(f"{prefix}Scanning {cache_path.with_suffix('')}... {int(ok.sum())} images, {corrupt} corrupt")
    return [sample for sample, good in zip(samples, ok.tolist(), strict=True) if good], shapes[ok], corrupt


def ram_cache_fits(shapes_wh: np.ndarray, prefix: str = "", safety_margin: float = 0.1) -> bool:
    """True when every image, decoded at its own size (``shapes_wh`` (n, 2)), fits in available memory with
    ``safety_margin``; the decision is logged."""
    required = int((shapes_wh[:, 0] * shapes_wh[:, 1] * 3).sum()) if len(shapes_wh) else 0
    return ram_cache_decision(required, safety_margin, prefix, instead="reading images from disk instead")


class ClassificationDataset(Dataset):
    """Images of an ImageNet-style split with their class indices (upstream's class and attributes).

    Args:
        root: the split folder (``train/``, ``val/``) with one subfolder per class.
        augment: training augmentation (random resized crop, flips, HSV jitter) instead of the centre crop.
        imgsz: output side in pixels. cache: False, True/'ram' (decoded images in memory) or 'disk' (``.npy``).
        classes: class names in index order (default: the sorted subfolders of ``root``); a folder with another
            name is an error, a missing one a warning (validation) unless ``augment``.
        crop_scale: area range of the random resized crop. prefix: log prefix.

    Attributes:
        samples: ``[(path, class index)]`` of the usable images. classes, class_to_idx, targets: as torchvision's
        ``ImageFolder``. corrupt: images skipped. torch_transforms: the centre-crop transform; album_transforms:
        the training augmentation or None.
    """

    def __init__(self, root: PathLike, augment: bool, imgsz: int, cache: Any = False,
                 classes: Sequence[str] | None = None, crop_scale: Sequence[float] = DEFAULT_CROP_SCALE,
                 prefix: str = ""):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ClassificationDataError(f"{prefix}split folder {self.root} not found")
        classes = list(classes.values()) if isinstance(classes, dict) else classes
        self.classes = [str(c) for c in classes] if classes is not None else sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        listed = list_class_images(self.root, self.classes, require_all=augment, prefix=prefix)
        if not listed:
            raise ClassificationDataError(f"{prefix}{self.root}: no images found")
        self.samples, shapes, self.corrupt = cached_verify(listed, self.root.with_suffix(".cache"), prefix)
        if not self.samples:
            raise ClassificationDataError(f"{prefix}{self.root}: all {len(listed)} images are corrupt, see warnings")
        self.targets = np.array([c for _, c in self.samples], dtype=np.int64)
        self.imgsz = int(imgsz)
        self.torch_transforms = classify_transforms(self.imgsz)
        self.album_transforms = ClassifyAugment(self.imgsz, scale=crop_scale) if augment else None
        self.cache_ram = cache is True or cache == "ram"
        self.cache_disk = cache == "disk"
        if self.cache_ram and not ram_cache_fits(shapes, prefix):
            self.cache_ram = False
        self.images: list[np.ndarray | None] = [None] * len(self.samples)
        if self.cache_disk:
            for path, _ in self.samples:
                cache_to_disk(path)

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, i: int) -> np.ndarray:
        """Return image ``i`` as HWC BGR uint8 (from the RAM or disk cache when enabled)."""
        if self.images[i] is not None:
            return self.images[i]
        path = self.samples[i][0]
        image = load_fresh_npy(path) if self.cache_disk else None
        image = read_image(path) if image is None else image
        if self.cache_ram:
            self.images[i] = image
        return image

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """Return ``(image (3, imgsz, imgsz) float32 normalised RGB, class index)``."""
        image = self.load_image(i)
        transform = self.album_transforms or self.torch_transforms
        return transform(image), int(self.samples[i][1])


def create_classification_dataloader(path: PathLike, imgsz: int = 224, batch_size: int = 16, augment: bool = True,
                                     cache: Any = False, rank: int = -1, workers: int = 8, shuffle: bool = True,
                                     classes: Sequence[str] | None = None,
                                     crop_scale: Sequence[float] = DEFAULT_CROP_SCALE, seed: int = 0,
                                     prefix: str = "") -> DataLoader:
    """Return an ``InfiniteDataLoader`` over a :class:`ClassificationDataset` (upstream's signature plus ``classes``,
    ``crop_scale``, ``seed`` and ``prefix``); under DDP (``rank`` != -1) each rank reads its shard.

    Batches are ``(images (B, 3, imgsz, imgsz) float32, labels (B,) int64)``. Workers = min(CPUs per CUDA
    device, batch size, ``workers``); loader randomness is seeded from ``seed`` and the global rank.
    """
    with torch_distributed_zero_first(rank):
        dataset = ClassificationDataset(path, augment, imgsz, cache, classes, crop_scale, prefix)
    batch_size = min(batch_size, len(dataset))
    sampler = None if rank == -1 else DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    generator = torch.Generator()
    generator.manual_seed(GENERATOR_SEED_BASE + seed + max(rank, -1))
    pin_memory = os.getenv("PIN_MEMORY", "True").lower() == "true" and torch.cuda.is_available()
    return InfiniteDataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                              num_workers=loader_workers(batch_size, workers), sampler=sampler, pin_memory=pin_memory,
                              worker_init_fn=init_worker, generator=generator)
