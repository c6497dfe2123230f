"""Segmentation data: polygon -> mask (upstream's values), the built-in ``shapes-seg`` dataset, polygon label checks,
``LoadImagesAndLabelsAndMasks`` samples (masks follow letterbox, mosaic, warps and flips) and the loader."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from tests.dataset_support import make_dataset
from utils.boxes import segments2boxes
from utils.data.builtin import (
    GENERATOR_VERSION,
    ensure_builtin_dataset,
    generate_shapes_dataset,
    label_polygon,
    render_sample,
    render_segment_sample,
)
from utils.data.labels import parse_label_text, parse_labels, verify_image_label
from utils.data.masks import polygon2mask, polygons2masks, polygons2masks_overlap
from utils.data.segment_dataset import LoadImagesAndLabelsAndMasks, create_dataloader
from utils.data.shapes import SHAPE_NAMES

SQUARE = np.array([[100.3, 100.7], [300.2, 100.7], [300.2, 260.9], [100.3, 260.9]])


# ------------------------------------------------------------------------------------------------- polygon -> mask
def test_square_mask_pixel_counts_at_each_ratio():
    # the values upstream's polygons2masks gives (yolov5 7.0.14): vertices truncate to x 100..300, y 100..260 and
    # fillPoly includes both ends (201 x 161 px); the bilinear shrink averages the two middle pixels of each block
    # (ratio 2: pixels 2u, 2u+1, a half rounds up, a quarter (one corner) down; ratio 4: pixels 4u+1, 4u+2)
    assert polygon2mask((640, 640), [SQUARE], 1, 1).sum() == 201 * 161
    assert polygon2mask((640, 640), [SQUARE], 1, 2).sum() == 101 * 81 - 1 == 8180
    assert polygon2mask((640, 640), [SQUARE], 1, 4).sum() == 50 * 40  # u in 25..74, v in 25..64
    mask = polygon2mask((640, 480), [SQUARE.reshape(-1)], 7, 4)
    assert mask.shape == (160, 120) and set(np.unique(mask)) == {0, 7}
    assert mask[25:65, 25:75].all() and mask.sum() == 7 * 2000


def test_sides_not_multiple_of_ratio_fall_back_to_the_whole_image():
    mask = polygon2mask((642, 630), [SQUARE], 1, 4)
    assert mask.shape == (160, 157) and mask.sum() == 2000  # upstream's value for this case too


def test_polygons_outside_or_degenerate():
    assert polygon2mask((64, 64), [np.array([[-50.0, -50], [-10, -50], [-10, -10]])], 1, 4).sum() == 0
    assert polygon2mask((64, 64), [np.array([[1.0, 1.0], [5.0, 5.0]])], 1, 4).sum() == 0  # < 3 points: skipped
    assert polygons2masks((64, 64), [], 1, 4).shape == (0, 16, 16)


def test_overlap_mask_puts_the_smaller_instance_on_top_and_returns_the_order():
    big = np.array([[0.0, 0], [200, 0], [200, 200], [0, 200]])
    small = np.array([[40.0, 40], [120, 40], [120, 120], [40, 120]])
    index, order = polygons2masks_overlap((256, 256), [small, big], 4)
    assert order.tolist() == [1, 0] and index.dtype == np.uint8 and index.shape == (64, 64)
    assert index[5, 5] == 1 and index[20, 20] == 2 and index[60, 60] == 0  # big = 1, small = 2 on top, background
    separate = polygons2masks((256, 256), [small, big], 1, 4)
    assert (index == 2).sum() == separate[0].sum()
    assert (index == 1).sum() == separate[1].sum() - separate[0].sum()


def test_overlap_mask_with_more_than_255_instances_is_int32():
    squares = [np.array([[x, y], [x + 6.0, y], [x + 6.0, y + 6], [x, y + 6]]) for x in range(0, 160, 8)
               for y in range(0, 112, 8)]
    index, order = polygons2masks_overlap((160, 160), squares, 1)
    assert len(squares) == 280 and index.dtype == np.int32 and index.max() == 280 and len(order) == 280


# ------------------------------------------------------------------------------------------------ built-in dataset
def test_segment_sample_has_the_detection_sample_image_and_boxes():
    image, labels = render_sample(np.random.default_rng([0, 3, GENERATOR_VERSION]))
    seg_image, objects = render_segment_sample(np.random.default_rng([0, 3, GENERATOR_VERSION]))
    assert np.array_equal(image, seg_image) and [c for c, _ in objects] == labels[:, 0].astype(int).tolist()
    boxes = segments2boxes([p for _, p in objects])
    assert np.abs(boxes - labels[:, 1:]).max() < 1e-6


def test_ring_polygon_is_bridged_and_fills_with_a_hole():
    outline = np.stack((50 + 40 * np.cos(np.linspace(0, 2 * np.pi, 64, endpoint=False)),
                        50 + 40 * np.sin(np.linspace(0, 2 * np.pi, 64, endpoint=False))), 1)
    hole = 50 + (outline - 50) * 0.5
    polygon = label_polygon([outline, hole])
    assert len(polygon) == 64 + 1 + 1 + 63 + 1
    mask = polygon2mask((100, 100), [polygon], 1, 1)
    assert mask[50, 50] == 0 and mask[50, 20] == 1 and mask[50, 80] == 1 and mask[20, 50] == 1
    assert mask[50, 5] == 0 and mask[49:52, 72:89].all()  # the cut (row 50, x 70..90) leaves no gap or seam
    area = mask.sum()
    assert abs(area - np.pi * (40**2 - 20**2)) < 0.05 * np.pi * (40**2 - 20**2)


def test_shapes_seg_dataset_has_the_same_images_and_valid_polygon_labels(tmp_path):
    sizes = {"train": 4, "val": 2}
    det = generate_shapes_dataset(tmp_path / "shapes", sizes)
    seg = generate_shapes_dataset(tmp_path / "shapes-seg", sizes, "shapes-seg")
    for split, size in sizes.items():
        for i in range(size):
            stem = f"{split}_{i:05d}"
            digest = [hashlib.sha256((r / "images" / split / f"{stem}.jpg").read_bytes()).digest() for r in (det, seg)]
            assert digest[0] == digest[1]
            record = verify_image_label((str(seg / "images" / split / f"{stem}.jpg"),
                                         str(seg / "labels" / split / f"{stem}.txt"), "", len(SHAPE_NAMES)))
            det_labels = parse_label_text((det / "labels" / split / f"{stem}.txt").read_text())[0]
            assert record.corrupt == 0 and len(record.segments) == len(record.labels) == len(det_labels)
            assert np.allclose(record.labels, det_labels, atol=2e-6)


def test_ensure_builtin_knows_shapes_seg(tmp_path, monkeypatch):
    import utils.data.builtin as builtin

    monkeypatch.setattr(builtin, "SPLIT_SIZES", {"train": 1})
    calls = []
    monkeypatch.setitem(builtin.BUILTIN_DATASETS, "shapes-seg",
                        lambda root: calls.append(root) or root)
    ensure_builtin_dataset("shapes-seg", tmp_path / "x")
    assert calls == [tmp_path / "x"]


# ---------------------------------------------------------------------------------------------------- label checks
def test_polygon_without_area_is_reported_with_its_line_and_kept():
    parsed = parse_labels("0 0.1 0.1 0.3 0.1 0.3 0.4\n1 0.1 0.1 0.2 0.2 0.3 0.3\n")
    assert len(parsed.labels) == 2 and len(parsed.segments) == 2
    assert parsed.warnings == ["line 2: polygon encloses no area (points on one line); its mask is empty"]


def test_bad_polygon_rows_skip_the_image_with_file_and_line(tmp_path):
    images = make_dataset(tmp_path, {"good": "0 0.1 0.1 0.4 0.1 0.4 0.4\n", "odd": "0 0.1 0.1 0.4 0.1 0.4 0.4\n"
                                     "1 0.1 0.1 0.2 0.2 0.3\n", "flat": "2 0.1 0.1 0.2 0.2 0.3 0.3\n"})
    label_dir = tmp_path / "labels" / "train"
    odd = verify_image_label((str(images / "odd.jpg"), str(label_dir / "odd.txt"), ""))
    assert odd.corrupt == 1 and str(label_dir / "odd.txt") in odd.message and "line 2" in odd.message
    flat = verify_image_label((str(images / "flat.jpg"), str(label_dir / "flat.txt"), ""))
    assert flat.corrupt == 0 and "flat.txt: line 1: polygon encloses no area" in flat.message
    dataset = LoadImagesAndLabelsAndMasks(str(images), 64, augment=False, downsample_ratio=4, overlap=False)
    assert sorted(p.split("/")[-1] for p in dataset.im_files) == ["flat.jpg", "good.jpg"]


# ---------------------------------------------------------------------------------------------------------- dataset
@pytest.fixture(scope="module")
def seg_root(tmp_path_factory):
    return generate_shapes_dataset(tmp_path_factory.mktemp("seg") / "shapes-seg", {"train": 8}, "shapes-seg")


def _mask_in_box_fraction(mask: np.ndarray, box_xywhn: np.ndarray) -> float:
    h, w = mask.shape
    x, y, bw, bh = box_xywhn
    x1, x2 = int(np.floor((x - bw / 2) * w)) - 1, int(np.ceil((x + bw / 2) * w)) + 1
    y1, y2 = int(np.floor((y - bh / 2) * h)) - 1, int(np.ceil((y + bh / 2) * h)) + 1
    return mask[max(y1, 0):y2, max(x1, 0):x2].sum() / max(mask.sum(), 1)


@pytest.mark.parametrize("overlap", [True, False])
def test_augmented_samples_keep_masks_on_their_boxes(seg_root, overlap):
    hyp = {"degrees": 15.0, "shear": 5.0, "fliplr": 0.5, "flipud": 0.5, "mixup": 0.3}
    dataset = LoadImagesAndLabelsAndMasks(str(seg_root / "images" / "train"), 128, augment=True, hyp=hyp,
                                          downsample_ratio=4, overlap=overlap)
    checked = 0
    for i in range(len(dataset)):
        image, labels, _, _, masks = dataset[i]
        assert image.shape == (3, 128, 128) and masks.dtype == torch.uint8
        masks = masks.numpy()
        assert masks.shape == ((1, 32, 32) if overlap else (len(labels), 32, 32))
        for k, row in enumerate(labels.numpy()):
            instance = (masks[0] == k + 1) if overlap else masks[k].astype(bool)
            if instance.sum() >= 4:
                assert _mask_in_box_fraction(instance, row[2:6]) > 0.9
                checked += 1
        if overlap and len(labels):
            assert masks.max() <= len(labels)
    assert checked > 10


def test_letterboxed_sample_mask_is_the_label_polygon(tmp_path):
    images = make_dataset(tmp_path, {"a": "0 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n"
                                          "1 0.5 0.5 0.9 0.5 0.9 0.9 0.5 0.9\n"}, size=(64, 64))
    dataset = LoadImagesAndLabelsAndMasks(str(images), 64, augment=False, downsample_ratio=1, overlap=True)
    _, labels, _, shapes, masks = dataset[0]
    assert labels[:, 1].tolist() == [0.0, 1.0]  # larger polygon first
    assert shapes[0] == (64, 64) and masks.shape == (1, 64, 64)
    assert (masks[0] == 2).sum() == polygon2mask((64, 64), [np.array([[32, 32], [57.6, 32], [57.6, 57.6],
                                                                     [32, 57.6]])], 1, 1).sum()
    union = polygons2masks((64, 64), [np.array([[16.0, 16], [48, 16], [48, 48], [16, 48]]),
                                      np.array([[32, 32], [57.6, 32], [57.6, 57.6], [32, 57.6]])], 1, 1).max(0)
    assert ((masks[0] > 0).numpy() == union.astype(bool)).all()


def test_flips_move_masks_with_labels(tmp_path):
    images = make_dataset(tmp_path, {"a": "0 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n"}, size=(64, 64))
    hyp = {"mosaic": 0.0, "fliplr": 1.0, "flipud": 1.0, "translate": 0.0, "scale": 0.0, "hsv_h": 0, "hsv_s": 0,
           "hsv_v": 0}
    dataset = LoadImagesAndLabelsAndMasks(str(images), 64, augment=True, hyp=hyp, downsample_ratio=1, overlap=False)
    _, labels, _, _, masks = dataset[0]
    ys, xs = np.nonzero(masks[0].numpy())
    assert abs(xs.mean() / 64 - labels[0, 2].item()) < 0.03 and abs(ys.mean() / 64 - labels[0, 3].item()) < 0.03
    assert labels[0, 2] > 0.5 and labels[0, 3] > 0.5


def test_box_only_labels_get_rectangle_masks_with_a_warning(tmp_path, log_text):
    images = make_dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.25\n"}, size=(64, 64))
    dataset = LoadImagesAndLabelsAndMasks(str(images), 64, augment=False, downsample_ratio=1, overlap=False)
    _, _, _, _, masks = dataset[0]
    assert "have box labels without polygons" in log_text.text
    assert masks[0].sum() in range(32 * 16, 33 * 17 + 1)


def test_loader_batches_masks(seg_root):
    for overlap, rows in ((True, None), (False, "labels")):
        loader, _ = create_dataloader(str(seg_root / "images" / "train"), 128, 4, 32, augment=True, workers=0,
                                      mask_downsample_ratio=4, overlap_mask=overlap, shuffle=True)
        images, labels, paths, shapes, masks = next(iter(loader))
        assert images.shape == (4, 3, 128, 128) and len(paths) == 4
        assert masks.shape == ((4, 32, 32) if rows is None else (len(labels), 32, 32))
    with pytest.raises(ValueError, match="--quad is not supported"):
        create_dataloader(str(seg_root / "images" / "train"), 128, 4, 32, quad=True)
