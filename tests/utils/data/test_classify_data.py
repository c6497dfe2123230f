"""Classification data (utils/data/classify.py, classify_augment.py, builtin_cls.py): dataset lookup, checked class
folders, bad images skipped and counted, transforms with exact values, and the built-in generator."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from utils.data.builtin_cls import GENERATOR_VERSION, ensure_shapes_cls_dataset, generate_shapes_cls_dataset
from utils.data.classify import (
    ClassificationDataError,
    ClassificationDataset,
    check_cls_dataset,
    create_classification_dataloader,
)
from utils.data.classify_augment import (
    CenterCrop,
    ClassifyAugment,
    ToTensor,
    classify_albumentations,
    classify_transforms,
    random_resized_box,
)
from utils.data.shapes import SHAPE_NAMES


def _image(path, h=40, w=30, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))


@pytest.fixture
def folder_data(tmp_path):
    """train/{a,b} with 3 images each, val/{a,b} with 1 each."""
    for split, count in (("train", 3), ("val", 1)):
        for name in ("a", "b"):
            for i in range(count):
                _image(tmp_path / "ds" / split / name / f"{i}.jpg", value=40 if name == "a" else 200)
    return tmp_path / "ds"


def test_folder_dataset_is_found_and_described(folder_data):
    info = check_cls_dataset(folder_data)
    assert info["names"] == {0: "a", 1: "b"} and info["nc"] == 2
    assert info["train"] == str(folder_data / "train") and info["val"] == str(folder_data / "val")
    assert info["crop_scale"] == (0.08, 1.0)


def test_test_split_replaces_a_missing_val_split(folder_data):
    (folder_data / "val").rename(folder_data / "test")
    info = check_cls_dataset(folder_data)
    assert info["val"] == info["test"] == str(folder_data / "test")


def test_yaml_dataset_with_names_order_and_crop_scale(folder_data, tmp_path):
    file = tmp_path / "d.yaml"
    file.write_text(yaml.safe_dump({"path": str(folder_data), "train": "train", "val": "val", "names": ["b", "a"],
                                    "crop_scale": [0.5, 1.0]}))
    info = check_cls_dataset(file)
    assert info["names"] == {0: "b", 1: "a"} and info["crop_scale"] == (0.5, 1.0)
    dataset = ClassificationDataset(info["train"], False, 16, classes=list(info["names"].values()))
    assert dataset.classes == ["b", "a"] and sorted(set(dataset.targets.tolist())) == [0, 1]
    assert all(("/b/" in path) == (label == 0) for path, label in dataset.samples)


def test_missing_dataset_is_a_clear_error_that_downloads_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOv5_DATASETS_DIR", str(tmp_path))
    with pytest.raises(ClassificationDataError, match="Nothing is downloaded.*imagenette160"):
        check_cls_dataset("imagenette160")


def test_missing_validation_split_is_an_error(folder_data):
    (folder_data / "val").rename(folder_data / "other")
    with pytest.raises(ClassificationDataError, match="no validation split"):
        check_cls_dataset(folder_data)


def test_class_folder_without_images_is_an_error_naming_it(folder_data):
    (folder_data / "train" / "empty").mkdir()
    (folder_data / "train" / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ClassificationDataError, match=r"class folder .*train/empty contains no images"):
        ClassificationDataset(folder_data / "train", True, 16)


def test_validation_class_unknown_to_training_is_an_error(folder_data):
    _image(folder_data / "val" / "c" / "0.jpg")
    with pytest.raises(ClassificationDataError, match="class folder.*c are not among the 2 training classes"):
        ClassificationDataset(folder_data / "val", False, 16, classes=["a", "b"])


def test_bad_images_are_skipped_counted_and_named(folder_data, log_text):
    bad = folder_data / "train" / "a" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    tiny = folder_data / "train" / "b" / "tiny.png"
    _image(tiny, h=5, w=5)
    dataset = ClassificationDataset(folder_data / "train", True, 16)
    assert len(dataset) == 6 and dataset.corrupt == 2
    assert str(bad) not in {p for p, _ in dataset.samples}
    text = log_text.text
    assert "Scanning" in text and "6 images, 2 corrupt" in text
    assert f"{bad}: ignoring corrupt image" in text and f"{tiny}: ignoring corrupt image" in text
    assert "below the 10x10 pixel minimum" in text
    assert (folder_data / "train.cache").is_file()  # verification is cached: a second scan skips the checks
    log_text.clear()
    again = ClassificationDataset(folder_data / "train", True, 16)
    assert again.corrupt == 2 and "ignoring corrupt image" not in log_text.text
    assert "6 images, 2 corrupt" in log_text.text


def test_all_images_corrupt_is_an_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "t" / name).mkdir(parents=True)
        (tmp_path / "t" / name / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(ClassificationDataError, match="all 2 images are corrupt"):
        ClassificationDataset(tmp_path / "t", True, 16)


def test_loader_batches_and_samples(folder_data):
    loader = create_classification_dataloader(folder_data / "train", imgsz=16, batch_size=4, augment=False,
                                              workers=0, shuffle=False)
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert labels.tolist() == [0, 0, 0, 1]
    expected = (40 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])  # uniform grey 40
    assert np.allclose(images[0].mean((1, 2)).numpy(), expected, atol=1e-5)


def test_center_crop_takes_the_centred_square_then_resizes():
    im = np.arange(4 * 6, dtype=np.uint8).reshape(4, 6, 1).repeat(3, 2)
    out = CenterCrop(4)(im)
    assert out.shape == (4, 4, 3) and np.array_equal(out[..., 0], im[:, 1:5, 0])
    assert CenterCrop((2, 3))(np.zeros((10, 20, 3), np.uint8)).shape == (2, 3, 3)


def test_to_tensor_is_rgb_chw_scaled():
    im = np.zeros((2, 3, 3), np.uint8)
    im[..., 0] = 255  # blue in BGR
    x = ToTensor()(im)
    assert x.shape == (3, 2, 3) and x[2].eq(1).all() and x[:2].eq(0).all()
    assert ToTensor(half=True)(im).dtype == torch.float16


def test_classify_transforms_normalise_and_pickle_under_upstream_names():
    transform = classify_transforms(8)
    x = transform(np.full((10, 16, 3), 255, np.uint8))
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x.mean((1, 2)), expected, atol=1e-6)
    data = pickle.dumps(transform)
    assert b"utils.augmentations" in data and b"CenterCrop" in data
    assert torch.equal(pickle.loads(data)(np.zeros((9, 9, 3), np.uint8)), transform(np.zeros((9, 9, 3), np.uint8)))
    with pytest.raises(TypeError, match="must be an integer"):
        classify_transforms([8, 8])


def test_random_resized_box_stays_inside_and_respects_scale():
    import random

    random.seed(0)
    for _ in range(200):
        top, left, h, w = random_resized_box(50, 80, (0.3, 0.6), (0.75, 4 / 3))
        assert 0 <= top and top + h <= 50 and 0 <= left and left + w <= 80
        assert 0.3 * 4000 * 0.9 <= h * w <= 0.6 * 4000 * 1.1
    assert random_resized_box(10, 100, (0.99, 1.0), (1.0, 1.0)) == (0, 45, 10, 10)  # fallback: centred square


def test_augment_output_and_calling_conventions():
    import random

    random.seed(1)
    augment = ClassifyAugment(24, scale=(0.5, 1.0), jitter=0.0, hflip=1.0)
    im = np.zeros((30, 40, 3), np.uint8)
    im[:, :20] = 255
    x = augment(im)
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    assert augment(image=im)["image"].shape == (3, 24, 24)
    assert isinstance(classify_albumentations(True, 16), ClassifyAugment)
    assert classify_albumentations(False, 16)(im).shape == (3, 16, 16)


def test_builtin_generator_layout_determinism_and_marker(tmp_path):
    sizes = {"train": 16, "val": 8}
    root = generate_shapes_cls_dataset(tmp_path / "a", sizes)
    for split, size in sizes.items():
        files = sorted((root / split).rglob("*.jpg"))
        assert len(files) == size
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(SHAPE_NAMES)
        for file in files:
            image = cv2.imread(str(file))
            assert 96 <= min(image.shape[:2]) <= max(image.shape[:2]) <= 160
    marker = json.loads((root / ".builtin-dataset.json").read_text())
    assert marker == {"dataset": "shapes-cls", "version": GENERATOR_VERSION, "splits": sizes}
    other = generate_shapes_cls_dataset(tmp_path / "b", sizes)
    first = sorted(p.read_bytes() for p in root.rglob("*.jpg"))
    assert first == sorted(p.read_bytes() for p in other.rglob("*.jpg"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary folders left behind


def test_builtin_reused_and_user_folders_never_touched(tmp_path):
    sizes = {"train": 8, "val": 8}
    root = ensure_shapes_cls_dataset(tmp_path / "shapes-cls", sizes)
    stamp = (root / "train").stat().st_mtime_ns
    assert ensure_shapes_cls_dataset(root, sizes) == root and (root / "train").stat().st_mtime_ns == stamp
    user = tmp_path / "mine"
    _image(user / "train" / "x" / "0.jpg")
    with pytest.raises(FileExistsError, match="not created by the built-in dataset generator"):
        ensure_shapes_cls_dataset(user, sizes)
    assert (user / "train" / "x" / "0.jpg").is_file()


def test_ram_and_disk_caches_return_the_same_samples(folder_data, log_text):
    plain = ClassificationDataset(folder_data / "train", False, 16)
    ram = ClassificationDataset(folder_data / "train", False, 16, cache="ram")
    assert ram.cache_ram and "caching images" in log_text.text
    first = ram[0][0]
    assert ram.images[0] is not None and torch.equal(first, plain[0][0])
    disk = ClassificationDataset(folder_data / "train", False, 16, cache="disk")
    assert all(Path(p).with_suffix(".npy").is_file() for p, _ in disk.samples)
    assert torch.equal(disk[3][0], plain[3][0])
