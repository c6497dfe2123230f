"""Tests for utils/plotting/annotate.py: palette, annotator, training-batch mosaics and label statistics plots."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from utils.plotting.annotate import Annotator, Colors, colors, plot_images, plot_labels


def test_palette():
    assert colors(0) == (255, 56, 56) and colors(0, bgr=True) == (56, 56, 255)
    assert colors(20) == colors(0) and colors(19) == (255, 55, 199)
    assert Colors.hex2rgb("#00C2FF") == (0, 194, 255)


def test_annotator_cv2_draws_in_place():
    image = np.zeros((100, 120, 3), np.uint8)
    annotator = Annotator(image, line_width=2)
    annotator.box_label([20, 40, 80, 90], "car 0.9", color=(0, 255, 0))
    assert not annotator.pil and annotator.result() is image
    assert image[60, 20].tolist() == [0, 255, 0] and image[60, 50].tolist() == [0, 0, 0]  # edge drawn, inside empty
    assert (image[25:39, 20:40] == (0, 255, 0)).all(axis=2).any()  # label tab above the box
    annotator.rectangle([0, 0, 10, 10], fill=(9, 9, 9))
    annotator.text([50, 5], "hi", txt_color=(200, 200, 200))
    assert image[5, 5].tolist() == [9, 9, 9]
    with pytest.raises(ValueError, match="contiguous"):
        Annotator(np.zeros((10, 10, 3), np.uint8)[:, ::-1])


def test_annotator_pil_for_non_ascii_labels():
    annotator = Annotator(np.zeros((80, 80, 3), np.uint8), example="猫")
    annotator.box_label([10, 30, 60, 70], "猫", color=(255, 0, 0))
    result = annotator.result()
    assert annotator.pil and result.shape == (80, 80, 3) and result[50, 10].tolist() == [255, 0, 0]


def _batch(n=5, size=64):
    images = torch.zeros((n, 3, size, size), dtype=torch.uint8)
    targets = torch.tensor([[i, i % 3, 0.5, 0.5, 0.5, 0.5] for i in range(n)], dtype=torch.float32)
    return images, targets


def test_plot_images_grid_and_boxes(tmp_path):
    images, targets = _batch()
    path = plot_images(images, targets, [f"/x/img{i}.jpg" for i in range(5)], tmp_path / "train_batch0.jpg",
                       names={0: "circle", 1: "rectangle", 2: "star"})
    grid = cv2.imread(str(path))
    assert grid.shape == (192, 192, 3)  # 5 images -> 3x3 tiles of 64 px
    assert not list(tmp_path.glob(".*.tmp"))
    red = np.abs(grid.astype(int) - np.array(colors(0, bgr=True))).sum(2) < 90
    assert red[16:48, 16].any()  # class 0 box edge of tile 0 at x = 16


def test_plot_images_confidence_filter_and_pixel_boxes(tmp_path):
    images = torch.full((1, 3, 64, 64), 0.0)  # float 0-1 input
    targets = np.array([[0, 1, 32, 32, 40, 40, 0.9], [0, 2, 10, 10, 8, 8, 0.1]])  # pixels, conf column
    grid = cv2.imread(str(plot_images(images, targets, fname=tmp_path / "pred.jpg", names=["a", "b", "c"])))
    green = np.abs(grid.astype(int) - np.array(colors(1, bgr=True))).sum(2) < 90
    other = np.abs(grid.astype(int) - np.array(colors(2, bgr=True))).sum(2) < 90
    assert green[20:44, 12].any() and not other[6:14, 6:14].any()  # conf 0.1 <= 0.25 is not drawn


def test_plot_images_large_batch_is_capped_and_downscaled(tmp_path):
    images, targets = _batch(n=20, size=640)
    grid = cv2.imread(str(plot_images(images, targets, fname=tmp_path / "big.jpg")))
    assert grid.shape == (1920, 1920, 3)  # 16 tiles max; 4 x 640 > 1920 -> scaled to 480 px tiles


def test_plot_labels_writes_both_figures(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.concatenate((rng.integers(0, 4, (200, 1)), rng.uniform(0.05, 0.95, (200, 4)) * [1, 1, 0.3, 0.3]), 1)
    path = plot_labels(labels, names={0: "a", 1: "b", 2: "c", 3: "d"}, save_dir=tmp_path)
    assert path == tmp_path / "labels.jpg" and cv2.imread(str(path)).shape[0] > 500
    assert cv2.imread(str(tmp_path / "labels_correlogram.jpg")) is not None
    assert not list(tmp_path.glob(".*.tmp"))


def test_plot_labels_empty_without_correlogram(tmp_path):
    plot_labels(np.zeros((0, 5)), names=["a"], save_dir=tmp_path, correlogram=False)
    assert (tmp_path / "labels.jpg").is_file() and not (tmp_path / "labels_correlogram.jpg").exists()


def test_matplotlib_backend_untouched(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    plot_labels(np.array([[0, 0.5, 0.5, 0.1, 0.1]]), save_dir=tmp_path, correlogram=False)
    assert matplotlib.get_backend() == backend
