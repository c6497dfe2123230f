"""Tests for utils/data/loaders.py, utils/data/dataset.py, utils/data/paths.py and utils/data/images.py."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

import utils.data.images as image_cache
import utils.data.loaders as dataloaders
from tests.dataset_support import fingerprints, make_dataset, write_image, write_label
from utils.data.dataset import rect_batch_shapes
from utils.data.loaders import (
    IMG_FORMATS,
    InfiniteDataLoader,
    LoadImagesAndLabels,
    SmartDistributedSampler,
    create_dataloader,
    img2label_paths,
)
from utils.data.paths import list_image_files


@pytest.fixture
def dataset_dir(tmp_path):
    """10 images (64x80) with 1-3 labels each, 2 backgrounds."""
    labels = {f"im{i}": "".join(f"{(i + k) % 3} 0.{2 + k} 0.5 0.2 0.3\n" for k in range(i % 3 + 1)) for i in range(8)}
    labels.update({"bg0": None, "bg1": ""})
    return make_dataset(tmp_path, labels)


# ---------------------------------------------------------------- files


def test_img2label_paths():
    sep = os.sep
    assert img2label_paths([f"a{sep}images{sep}train{sep}x.jpg"]) == [f"a{sep}labels{sep}train{sep}x.txt"]
    assert img2label_paths([f"images{sep}a{sep}images{sep}x.png"]) == [f"images{sep}a{sep}labels{sep}x.txt"]
    assert img2label_paths([f"data{sep}x.y.jpeg"]) == [f"data{sep}x.y.txt"]


def test_list_image_files_dir_txt_and_list(tmp_path):
    a = write_image(tmp_path / "d1" / "b.jpg")
    b = write_image(tmp_path / "d1" / "sub" / "a.PNG")
    (tmp_path / "d1" / "notes.txt").write_text("x")
    c = write_image(tmp_path / "d2" / "c.bmp")
    assert list_image_files(tmp_path / "d1") == sorted([str(a), str(b)])
    (tmp_path / "list.txt").write_text(f"./d2/c.bmp\n{a}\n\n")
    assert list_image_files(tmp_path / "list.txt") == sorted([str(c), str(a)])
    assert list_image_files([tmp_path / "d1", tmp_path / "d2"]) == sorted([str(a), str(b), str(c)])
    with pytest.raises(FileNotFoundError, match="missing_dir does not exist"):
        list_image_files(tmp_path / "missing_dir", prefix="train: ")
    (tmp_path / "no_images").mkdir()
    with pytest.raises(FileNotFoundError, match="No images found"):
        list_image_files(tmp_path / "no_images")
    assert "jpg" in IMG_FORMATS and "gif" not in IMG_FORMATS


# ---------------------------------------------------------------- loader basics


def test_create_dataloader_batches(dataset_dir):
    loader, dataset = create_dataloader(str(dataset_dir), 64, 4, 32, workers=0)
    assert isinstance(loader, InfiniteDataLoader) and isinstance(dataset, LoadImagesAndLabels)
    assert len(loader) == 3 and dataset.n == 10
    for _ in range(2):  # the infinite loader yields exactly len() batches per epoch
        batches = list(loader)
        assert len(batches) == 3
    images, labels, paths, shapes = batches[0]
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8
    assert labels.shape[1] == 6 and set(labels[:, 0].tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert len(paths) == 4 and shapes[0][0] == (64, 80)


def test_item_format_and_letterbox_shapes(dataset_dir):
    dataset = LoadImagesAndLabels(str(dataset_dir), img_size=64)
    image, labels, path, shapes = dataset[dataset.im_files.index(str(dataset_dir / "im2.jpg"))]
    assert image.shape == (3, 64, 64) and path.endswith("im2.jpg")
    (h0, w0), ((rh, rw), (pad_w, pad_h)) = shapes
    # 64x80 -> long side 64: 52x64 (ceil of 51.2); letterboxed to 64x64 with 6 rows on top and bottom
    assert (h0, w0) == (64, 80) and (rh, rw) == (52 / 64, 0.8) and (pad_w, pad_h) == (0.0, 6.0)
    assert labels[:, 1].tolist() == [2.0, 0.0, 1.0] and (labels[:, 0] == 0).all()
    # y: 0.5 * 52 + 6 = 32 of 64; height 0.3 * 52 / 64
    np.testing.assert_allclose(labels[:, 2:].numpy(), [[0.2, 0.5, 0.2, 0.24375], [0.3, 0.5, 0.2, 0.24375],
                                                       [0.4, 0.5, 0.2, 0.24375]], atol=1e-6)


def test_rgb_channel_order(tmp_path):
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    import cv2

    cv2.imwrite(str(tmp_path / "blue.png"), image)
    dataset = LoadImagesAndLabels(str(tmp_path), img_size=32)
    tensor = dataset[0][0]
    assert tensor[2].float().mean() == 255 and tensor[0].float().mean() == 0


def test_rect_batch_shapes_hand_computed():
    shapes_wh = np.array([[100, 50], [100, 60], [50, 100], [60, 100], [100, 100]], float)
    order, batch_shapes = rect_batch_shapes(shapes_wh, batch_size=2, img_size=64, stride=32, pad=0.0)
    np.testing.assert_array_equal(order, [0, 1, 4, 3, 2])  # aspect h/w: 0.5, 0.6, 1, 1.67, 2
    # batch 0: all wide, max ar 0.6 -> [0.6, 1] -> ceil(1.2) * 32 = 64 rows; batch 1 mixed -> [1, 1]; batch 2 tall
    np.testing.assert_array_equal(batch_shapes, [[64, 64], [64, 64], [64, 32]])
    _, padded = rect_batch_shapes(shapes_wh, batch_size=2, img_size=64, stride=32, pad=0.5)
    np.testing.assert_array_equal(padded, [[64, 96], [96, 96], [96, 64]])


def test_rect_loader_uses_batch_shapes(tmp_path, log_text):
    for i, (h, w) in enumerate([(32, 80), (30, 80), (80, 32), (80, 30)]):
        write_image(tmp_path / "images" / f"{i}.jpg", h, w, seed=i)
    loader, dataset = create_dataloader(str(tmp_path / "images"), 64, 2, 32, rect=True, shuffle=True, workers=0)
    assert "--rect is incompatible with DataLoader shuffle" in log_text.text
    assert [tuple(b[0].shape[2:]) for b in loader] == [(32, 64), (64, 32)]


def test_quad_collate(monkeypatch):
    images = [torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (10, 20, 30, 40)]
    labels = [torch.tensor([[0, k, 0.5, 0.5, 0.2, 0.2]]) for k in range(4)]
    batch = [(images[k], labels[k], f"p{k}", None) for k in range(4)]
    monkeypatch.setattr(random, "random", lambda: 0.9)  # tile, not upsample
    tiled, tiled_labels, paths, _ = LoadImagesAndLabels.collate_fn4(batch)
    assert tiled.shape == (1, 3, 8, 8) and paths == ("p0",)
    assert tiled[0, 0, 0, 0] == 10 and tiled[0, 0, 7, 0] == 20 and tiled[0, 0, 0, 7] == 30 and tiled[0, 0, 7, 7] == 40
    np.testing.assert_allclose(tiled_labels.numpy(), [[0, 0, 0.25, 0.25, 0.1, 0.1], [0, 1, 0.25, 0.75, 0.1, 0.1],
                                                      [0, 2, 0.75, 0.25, 0.1, 0.1], [0, 3, 0.75, 0.75, 0.1, 0.1]])
    monkeypatch.setattr(random, "random", lambda: 0.1)  # upsample the first image 2x
    upsampled, up_labels, _, _ = LoadImagesAndLabels.collate_fn4(batch)
    assert upsampled.shape == (1, 3, 8, 8) and (upsampled == 10).all()
    np.testing.assert_allclose(up_labels.numpy(), [[0, 0, 0.5, 0.5, 0.2, 0.2]])


def test_quad_loader_drops_incomplete_groups(dataset_dir):
    loader, _ = create_dataloader(str(dataset_dir), 64, 4, 32, quad=True, workers=0)
    images, labels, paths, _ = next(iter(loader))
    assert images.shape == (1, 3, 128, 128) and len(paths) == 1 and len(loader) == 2


def test_single_cls_and_min_items(dataset_dir):
    dataset = LoadImagesAndLabels(str(dataset_dir), img_size=64, single_cls=True, min_items=2)
    assert dataset.n == 5  # images with 2 or 3 labels: im1, im2, im4, im5, im7
    assert all((labels[:, 0] == 0).all() for labels in dataset.labels)


def test_image_weights_indices_hook(dataset_dir):
    loader, dataset = create_dataloader(str(dataset_dir), 64, 2, 32, image_weights=True, workers=0)
    assert type(loader) is torch.utils.data.DataLoader and not dataset.rect
    dataset.indices = np.full(dataset.n, 3)  # the trainer resamples indices every epoch
    paths = {p for batch in loader for p in batch[2]}
    assert paths == {dataset.im_files[3]}


def test_training_errors_without_labels(tmp_path):
    images = make_dataset(tmp_path, {"a": None, "b": None})
    with pytest.raises(RuntimeError, match="No labels found in .*train.cache, can not start training"):
        LoadImagesAndLabels(str(images), img_size=64, augment=True)
    empty = make_dataset(tmp_path, {"a": "", "b": None}, split="empty")
    with pytest.raises(RuntimeError, match="All labels empty in .*empty.cache, can not start training"):
        LoadImagesAndLabels(str(empty), img_size=64, augment=True)
    make_dataset(tmp_path, {"a": None, "b": ""}, split="val")
    assert len(LoadImagesAndLabels(str(tmp_path / "images" / "val"), img_size=64)) == 2  # fine for validation


def test_augmented_loader_is_deterministic(dataset_dir):
    def first_batches(seed):
        random.seed(0)
        np.random.seed(0)
        loader, _ = create_dataloader(str(dataset_dir), 64, 4, 32, augment=True, hyp={"mixup": 0.5}, shuffle=True,
                                      seed=seed, workers=0)
        return [b[0] for b in list(loader)[:2]]

    a, b = first_batches(1), first_batches(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_worker_processes_are_reused_across_epochs(dataset_dir):
    loader, _ = create_dataloader(str(dataset_dir), 64, 2, 32, augment=True, shuffle=True, workers=2, seed=3)
    epoch1 = [b[0] for b in loader]
    pids = [worker.pid for worker in loader.iterator._workers]
    epoch2 = [b[0] for b in loader]
    assert len(epoch1) == len(epoch2) == 5 and len(pids) == 2
    assert [worker.pid for worker in loader.iterator._workers] == pids  # the same worker processes
    assert all(worker.is_alive() for worker in loader.iterator._workers)
    assert not all(torch.equal(a, b) for a, b in zip(epoch1, epoch2, strict=True))  # fresh augmentation


# ---------------------------------------------------------------- caching


def test_ram_cache_refused_when_memory_is_short(dataset_dir, monkeypatch, log_text):
    monkeypatch.setattr(image_cache, "available_memory", lambda: (100_000, 8 << 30))
    dataset = LoadImagesAndLabels(str(dataset_dir), img_size=64, cache_images="ram")
    assert all(image is None for image in dataset.ims)
    # 10 images of 64x80 resized to 52x64 (ceil of 51.2): 10 * 52 * 64 * 3 = 99840 bytes, +10% > 100000
    assert "WARNING ⚠️ --cache ram refused: 0.00GB RAM required" in log_text.text
    assert image_cache.ram_cache_bytes(dataset.shapes, 64) == 99840


def test_ram_cache_used_when_memory_suffices(dataset_dir, monkeypatch):
    monkeypatch.setattr(image_cache, "available_memory", lambda: (1 << 30, 8 << 30))
    dataset = LoadImagesAndLabels(str(dataset_dir), img_size=64, cache_images="ram", augment=True)
    assert all(image.shape == (52, 64, 3) for image in dataset.ims)
    assert dataset[0][0].shape == (3, 64, 64)


def test_available_memory_reads_proc_meminfo_without_psutil(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_psutil(name, *args, **kwargs):
        if name == "psutil":
            raise ImportError("psutil hidden")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psutil)
    available, total = image_cache.available_memory()
    assert 0 < available <= total


def test_disk_cache_writes_npy_beside_images_and_reuses(dataset_dir):
    before = fingerprints(dataset_dir)
    dataset = LoadImagesAndLabels(str(dataset_dir), img_size=64, cache_images="disk")
    npy = sorted(dataset_dir.glob("*.npy"))
    assert len(npy) == 10 and not list(dataset_dir.glob(".*.tmp"))
    assert {k: v for k, v in fingerprints(dataset_dir).items() if not k.endswith(".npy")} == before
    np.testing.assert_array_equal(np.load(npy[0]), image_cache.read_image(str(npy[0].with_suffix(".jpg"))))
    stamp = npy[0].stat().st_mtime_ns
    LoadImagesAndLabels(str(dataset_dir), img_size=64, cache_images="disk")
    assert npy[0].stat().st_mtime_ns == stamp  # fresh cache reused, not rewritten
    assert dataset[0][0].shape == (3, 64, 64)


def test_disk_cache_never_replaces_a_foreign_npy(dataset_dir):
    foreign = dataset_dir / "im0.npy"
    np.save(foreign, np.arange(5))
    content = foreign.read_bytes()
    os.utime(foreign, ns=(0, 0))  # older than the image
    LoadImagesAndLabels(str(dataset_dir), img_size=64, cache_images="disk")
    assert foreign.read_bytes() == content


def test_disk_cache_unwritable_warns_and_continues(dataset_dir, monkeypatch, log_text):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(image_cache, "atomic_write_bytes", refuse)
    dataset = LoadImagesAndLabels(str(dataset_dir), img_size=64, cache_images="disk")
    assert "--cache disk skipped, cannot write beside the images: read-only" in log_text.text
    assert dataset[0][0].shape == (3, 64, 64) and not list(dataset_dir.glob("*.npy"))


# ---------------------------------------------------------------- distributed pieces


def test_smart_distributed_sampler_partitions_and_pads():
    class Subset:
        indices = np.arange(5)

        def __len__(self):
            return 9

    rank0 = SmartDistributedSampler(Subset(), num_replicas=2, rank=0, shuffle=False)
    assert len(rank0) == 5 and list(rank0) == [0, 1, 2, 3, 4]
    shuffled = SmartDistributedSampler(Subset(), num_replicas=2, rank=0, shuffle=True, seed=1)
    first = list(shuffled)
    assert sorted(first) == [0, 1, 2, 3, 4] and list(shuffled) == first
    shuffled.set_epoch(1)
    assert sorted(list(shuffled)) == [0, 1, 2, 3, 4]

    class Short(Subset):
        indices = np.arange(4)

    assert list(SmartDistributedSampler(Short(), num_replicas=2, rank=1, shuffle=False)) == [0, 1, 2, 3, 0]


def test_rank_subset_without_process_group(dataset_dir):
    dataset = LoadImagesAndLabels(str(dataset_dir), img_size=64, rank=0, seed=0)
    np.testing.assert_array_equal(dataset.indices, np.arange(10))  # world size 1 when no group is initialised


def test_seed_worker_seeds_numpy_and_random():
    torch.manual_seed(5)
    dataloaders.seed_worker(0)
    a = (np.random.rand(), random.random())
    torch.manual_seed(5)
    dataloaders.seed_worker(0)
    assert (np.random.rand(), random.random()) == a


def test_label_beside_image_without_images_folder(tmp_path):
    write_image(tmp_path / "flat" / "x.jpg")
    write_label(tmp_path / "flat" / "x.txt", "0 0.5 0.5 0.5 0.5\n")
    dataset = LoadImagesAndLabels(str(tmp_path / "flat"), img_size=64)
    assert len(dataset.labels[0]) == 1 and (tmp_path / "flat.cache").is_file()
