"""Tests for utils/data/augment.py and the mosaic builders: exact geometry, label/pixel agreement, determinism."""

from __future__ import annotations

import importlib.util
import random

import cv2
import numpy as np
import pytest

import utils.data.augment as augmentations
from tests.dataset_support import write_label
from utils.data.augment import (
    Albumentations,
    apply_hsv_lut,
    box_candidates,
    copy_paste,
    hsv_lut,
    letterbox,
    mixup,
    random_flips,
    random_perspective,
)
from utils.data.dataset import LoadImagesAndLabels
from utils.data.mosaic import load_mosaic, load_mosaic9

HYP = {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0,
       "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0}


def white_box_image(height, width, box):
    """Black uint8 image with a white filled xyxy box (pixel edges)."""
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def bright_extent(image, threshold=127):
    """xyxy pixel-edge extent of pixels brighter than ``threshold`` (mean over channels)."""
    ys, xs = np.nonzero(image.mean(2) > threshold)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


# ---------------------------------------------------------------- letterbox


@pytest.mark.parametrize("shape, kwargs, out_shape, ratio, pad", [
    ((100, 200), {"auto": False}, (640, 640), (3.2, 3.2), (0.0, 160.0)),
    ((100, 200), {"auto": True}, (320, 640), (3.2, 3.2), (0.0, 0.0)),
    ((101, 200), {"auto": True}, (352, 640), (3.2, 3.2), (0.0, 14.5)),  # 640x323 + 29 rows: 14 top, 15 bottom
    ((100, 200), {"auto": False, "scaleup": False}, (640, 640), (1.0, 1.0), (220.0, 270.0)),
    ((100, 200), {"auto": False, "scaleFill": True}, (640, 640), (3.2, 6.4), (0.0, 0.0)),
    ((800, 400), {"auto": False, "scaleup": False}, (640, 640), (0.8, 0.8), (160.0, 0.0)),
])
def test_letterbox_shapes_ratios_pads(shape, kwargs, out_shape, ratio, pad):
    image, got_ratio, got_pad = letterbox(np.zeros((*shape, 3), np.uint8), 640, **kwargs)
    assert image.shape[:2] == out_shape
    assert got_ratio == pytest.approx(ratio) and got_pad == pytest.approx(pad)


def test_letterbox_split_rounding_and_fill():
    image, _, (pad_w, pad_h) = letterbox(np.zeros((101, 200, 3), np.uint8), 640, auto=True)
    assert pad_h == 14.5
    column = image[:, 320, 0]
    assert (column[:14] == 114).all() and column[14] == 0 and (column[-15:] == 114).all() and column[-16] == 0


def test_box_follows_letterbox():
    box = np.array([20, 10, 60, 30])  # xyxy in a 50x100 image
    image, (rw, rh), (pw, ph) = letterbox(white_box_image(50, 100, box), (128, 128), auto=False)
    expected = box * [rw, rh, rw, rh] + [pw, ph, pw, ph]  # 1.28x: [25.6, 44.8, 76.8, 70.4]
    np.testing.assert_allclose(expected, [25.6, 44.8, 76.8, 70.4])
    np.testing.assert_allclose(bright_extent(image), expected, atol=1.0)


# ---------------------------------------------------------------- random_perspective / box_candidates


def scripted_uniform(monkeypatch, values):
    """Make augmentations' random.uniform return ``values`` in order."""
    queue = list(values)
    monkeypatch.setattr(augmentations.random, "uniform", lambda a, b: queue.pop(0))


def test_random_perspective_identity_when_ranges_are_zero():
    image = white_box_image(40, 60, (10, 5, 30, 25))
    targets = np.array([[2, 10, 5, 30, 25]], float)
    out, new = random_perspective(image, targets, degrees=0, translate=0, scale=0, shear=0)
    assert out is image
    np.testing.assert_array_equal(new, targets)


def test_random_perspective_hand_computed_rotation_and_scale(monkeypatch):
    # draws: perspective x, y; angle 90 (counter-clockwise); scale 2; shear x, y; translate 0.5, 0.5 (centre)
    scripted_uniform(monkeypatch, [0, 0, 90, 2.0, 0, 0, 0.5, 0.5])
    image = white_box_image(100, 100, (10, 20, 30, 60))
    out, new = random_perspective(image, np.array([[1, 10, 20, 30, 60]], float))
    # centre -> (-40,-30,-20,10); x' = 2y, y' = -2x -> x in [-60, 20], y in [40, 80]; + (50, 50); clip to 100
    np.testing.assert_allclose(new, [[1, 0, 90, 70, 100]])
    np.testing.assert_allclose(bright_extent(out), [0, 90, 70, 100], atol=2)


def test_random_perspective_drops_boxes_pushed_out(monkeypatch):
    scripted_uniform(monkeypatch, [0, 0, 0, 1.0, 0, 0, 0.9, 0.5])  # shift right by 0.4 * 100 px
    targets = np.array([[0, 70, 40, 95, 60], [1, 10, 40, 30, 60]], float)
    _, new = random_perspective(np.zeros((100, 100, 3), np.uint8), targets, translate=0.4)
    np.testing.assert_allclose(new, [[1, 50, 40, 70, 60]])  # the first box moved fully outside: dropped


def test_box_candidates_thresholds():
    before = np.array([[0, 0, 10, 10]] * 5, float).T
    after = np.array([[0, 0, 2, 10], [0, 0, 3, 3], [0, 0, 10, 0.9], [0, 0, 3.2, 3.2], [0, 0, 300, 2.5]], float).T
    # w,h must exceed 2 px; area ratio > 0.1; aspect < 100
    np.testing.assert_array_equal(box_candidates(before, after), [False, False, False, True, False])


# ---------------------------------------------------------------- colour, flips, mixup, copy-paste


def test_hsv_lut_values_and_zero_saturation_gives_grey():
    lut = hsv_lut(np.array([1.1, 0.0, 2.0]))
    assert lut[0, 170, 0] == int(170 * 1.1 % 180) == 7 and lut[0, 200, 1] == 0 and lut[0, 200, 2] == 255
    image = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    grey = apply_hsv_lut(image, hsv_lut(np.array([1.0, 0.0, 1.0])))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    np.testing.assert_array_equal(grey[..., 0], image.max(2))  # V = max(B, G, R) is kept


def test_augment_hsv_zero_gains_is_identity():
    image = np.random.default_rng(1).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    before = image.copy()
    augmentations.augment_hsv(image, 0, 0, 0)
    np.testing.assert_array_equal(image, before)


def test_flips_move_labels_with_pixels():
    image = white_box_image(40, 80, (8, 4, 24, 12))  # centre (16, 8), size (16, 8) -> normalised
    labels = np.array([[3, 16 / 80, 8 / 40, 16 / 80, 8 / 40]])
    flipped, new = random_flips(image, labels.copy(), flipud=1.0, fliplr=1.0)
    x, y, w, h = new[0, 1:] * [80, 40, 80, 40]
    np.testing.assert_allclose(bright_extent(np.ascontiguousarray(flipped)), [x - w / 2, y - h / 2, x + w / 2,
                                                                            y + h / 2])
    np.testing.assert_allclose(new[0], [3, 0.8, 0.8, 0.2, 0.2])


def test_mixup_blend_and_labels():
    np.random.seed(3)
    ratio = np.random.beta(32.0, 32.0)
    np.random.seed(3)
    a, b = np.full((4, 4, 3), 200, np.uint8), np.full((4, 4, 3), 100, np.uint8)
    blended, labels = mixup(a, np.ones((1, 5)), b, np.zeros((2, 5)))
    assert blended[0, 0, 0] == round(200 * ratio + 100 * (1 - ratio)) and labels.shape == (3, 5)


def test_copy_paste_mirrors_instances():
    random.seed(0)
    image = np.zeros((20, 40, 3), np.uint8)
    image[5:15, 2:10] = 255
    segment = np.array([[2, 5], [10, 5], [10, 15], [2, 15]], float)
    out, labels, segments = copy_paste(image, np.array([[4, 2, 5, 10, 15]], float), [segment], p=1.0)
    np.testing.assert_allclose(labels[1], [4, 30, 5, 38, 15])  # x -> 40 - x
    assert len(segments) == 2 and out[10, 34].tolist() == [255, 255, 255] and out[10, 20].tolist() == [0, 0, 0]


def test_albumentations_optional():
    wrapper = Albumentations(64)
    labels = np.array([[0, 0.5, 0.5, 0.2, 0.2]])
    image = np.zeros((64, 64, 3), np.uint8)
    if importlib.util.find_spec("albumentations") is None:
        assert wrapper.transform is None
        out, new = wrapper(image, labels)
        assert out is image and new is labels


# ---------------------------------------------------------------- mosaic


@pytest.fixture
def box_dataset(tmp_path):
    """6 images (sizes 48-96 px) each with 2 white boxes on black exactly where the labels say."""
    rng = np.random.default_rng(0)
    for i in range(6):
        h, w = int(rng.integers(48, 97)), int(rng.integers(48, 97))
        image = np.zeros((h, w, 3), np.uint8)
        rows = []
        for cls in range(2):
            bw, bh = int(rng.integers(8, w // 2)), int(rng.integers(8, h // 2))
            x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            image[y1:y1 + bh, x1:x1 + bw] = (60 + 120 * cls, 255, 255)
            rows.append(f"{cls} {(x1 + bw / 2) / w} {(y1 + bh / 2) / h} {bw / w} {bh / h}")
        cv2.imwrite(str(tmp_path / f"{i}.png"), image)  # lossless: exact edges
        write_label(tmp_path / f"{i}.txt", "\n".join(rows) + "\n")
    return LoadImagesAndLabels(str(tmp_path), img_size=64, augment=True, hyp=HYP)


def run_mosaic(dataset, seed, direct=True, loader=load_mosaic):
    dataset.direct_mosaic = direct
    random.seed(seed)
    np.random.seed(seed)
    return loader(dataset, seed % len(dataset))


def test_mosaic_shape_bounds_and_determinism(box_dataset):
    for seed in range(8):
        image, labels = run_mosaic(box_dataset, seed)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert labels.shape[1] == 5 and (labels[:, 1:] >= 0).all() and (labels[:, 1:] <= 64).all()
        assert ((labels[:, 3] - labels[:, 1]) > 2).all() and ((labels[:, 4] - labels[:, 2]) > 2).all()
        again, labels_again = run_mosaic(box_dataset, seed)
        np.testing.assert_array_equal(image, again)
        np.testing.assert_array_equal(labels, labels_again)


def test_mosaic_fast_path_matches_canvas_path(box_dataset):
    for seed in range(12):
        fast, fast_labels = run_mosaic(box_dataset, seed, direct=True)
        slow, slow_labels = run_mosaic(box_dataset, seed, direct=False)
        assert fast_labels.shape == slow_labels.shape
        np.testing.assert_allclose(fast_labels, slow_labels, atol=0.5)  # sub-pixel placement remainder
        assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 6


def test_mosaic_labels_sit_on_their_pixels(box_dataset):
    """Each labelled box's interior is box-coloured and a ring just outside it is mostly not (both paths)."""
    box_dataset.hyp = {**HYP, "hsv_h": 0, "hsv_s": 0, "hsv_v": 0}
    for direct in (True, False):
        for seed in range(10):
            image, labels = run_mosaic(box_dataset, seed, direct)
            for _, x1, y1, x2, y2 in labels:
                if min(x2 - x1, y2 - y1) < 6:
                    continue
                inner = image[int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1, 1]
                assert inner.mean() > 200


def test_mosaic9_shape_and_bounds(box_dataset):
    for seed in range(4):
        image, labels = run_mosaic(box_dataset, seed, loader=load_mosaic9)
        assert image.shape == (64, 64, 3)
        assert (labels[:, 1:] >= 0).all() and (labels[:, 1:] <= 64).all()


def test_mosaic_with_rotation_uses_canvas_path(box_dataset):
    box_dataset.hyp = {**HYP, "degrees": 30.0, "shear": 5.0}
    image, labels = run_mosaic(box_dataset, 1)
    assert image.shape == (64, 64, 3) and (labels[:, 1:] <= 64).all()


def test_mosaic_decodes_large_jpegs_at_reduced_size(tmp_path, monkeypatch):
    """Sources much larger than the output are decoded at 1/2-1/8 size; labels still sit on their pixels."""
    import utils.data.dataset as dataset_module

    image = np.zeros((256, 256, 3), np.uint8)
    image[64:192, 96:224] = (0, 255, 255)  # box centre (160, 128), size (128, 128)
    cv2.imwrite(str(tmp_path / "big.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 100])
    write_label(tmp_path / "big.txt", "0 0.625 0.5 0.5 0.5\n")
    dataset = LoadImagesAndLabels(str(tmp_path), img_size=64, augment=True, hyp={**HYP, "hsv_h": 0, "hsv_s": 0,
                                                                               "hsv_v": 0})
    reductions = []
    real_read = dataset_module.read_image
    monkeypatch.setattr(dataset_module, "read_image", lambda f, r=1: reductions.append(r) or real_read(f, r))
    for seed in range(6):
        out, labels = run_mosaic(dataset, seed)
        for _, x1, y1, x2, y2 in labels:
            if min(x2 - x1, y2 - y1) >= 6:
                assert out[int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1, 1].mean() > 200
    assert set(reductions) <= {2, 4, 8} and reductions
