"""Tests for utils/data/builtin.py and utils/data/shapes.py: layout, validity, determinism, atomic reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest

import utils.data.builtin as default_dataset
from tests.dataset_support import fingerprints
from utils.data.builtin import (
    GENERATOR_VERSION,
    MARKER_FILE,
    ensure_builtin_dataset,
    ensure_shapes_dataset,
    generate_shapes_dataset,
    render_sample,
)
from utils.data.labels import parse_label_text, verify_image_label
from utils.data.shapes import SHAPE_NAMES, shape_polygons

SIZES = {"train": 5, "val": 3}


def test_layout_and_labels_are_valid(tmp_path):
    root = generate_shapes_dataset(tmp_path / "shapes", SIZES)
    for split, size in SIZES.items():
        images = sorted((root / "images" / split).glob("*.jpg"))
        assert len(images) == size
        for image in images:
            label = root / "labels" / split / f"{image.stem}.txt"
            record = verify_image_label((str(image), str(label), "", len(SHAPE_NAMES)))
            assert record.corrupt == 0 and record.found == 1 and 256 <= min(record.shape) <= max(record.shape) <= 416
    marker = json.loads((root / MARKER_FILE).read_text())
    assert marker == {"dataset": "shapes", "version": GENERATOR_VERSION, "splits": SIZES}
    assert [p.name for p in tmp_path.iterdir()] == ["shapes"]  # no temporary folders left behind


def test_generation_is_deterministic(tmp_path):
    a = generate_shapes_dataset(tmp_path / "a", SIZES)
    b = generate_shapes_dataset(tmp_path / "b", SIZES)
    files_a = {k.replace(str(a), ""): v[0] for k, v in fingerprints(a).items()}
    files_b = {k.replace(str(b), ""): v[0] for k, v in fingerprints(b).items()}
    assert files_a == files_b


def test_render_sample_labels_match_drawn_objects():
    rng = np.random.default_rng([0, 7, GENERATOR_VERSION])
    image, labels = render_sample(rng)
    height, width = image.shape[:2]
    assert labels.shape[1] == 5 and len(labels) >= 1
    assert ((labels[:, 1:] > 0) & (labels[:, 1:] <= 1)).all() and (labels[:, 0] < len(SHAPE_NAMES)).all()
    boxes = labels[:, 1:] * [width, height, width, height]
    assert (boxes[:, 2:].max(1) >= 12).all()  # the smallest shapes are about 14 px across


@pytest.mark.parametrize("name", SHAPE_NAMES)
def test_shape_polygons_fit_their_radius(name):
    rng = np.random.default_rng(1)
    polygons = shape_polygons(name, np.array([100.0, 100.0]), 40.0, rng)
    points = np.concatenate(polygons)
    assert np.hypot(*(points - 100).T).max() <= 40.0 + 1e-9
    assert len(polygons) == (2 if name == "ring" else 1)


def test_class_balance_and_difficulty_spread():
    labels = np.concatenate([render_sample(np.random.default_rng([0, i, GENERATOR_VERSION]))[1] for i in range(60)])
    counts = np.bincount(labels[:, 0].astype(int), minlength=8)
    assert (counts > 0).all() and counts.max() < 4 * counts.min()
    sizes = labels[:, 3]  # normalised widths: small and large objects both present
    assert sizes.min() < 0.06 and sizes.max() > 0.25


def test_ensure_reuses_existing_copy(tmp_path):
    root = ensure_shapes_dataset(tmp_path / "shapes", SIZES)
    before = fingerprints(root)
    ensure_shapes_dataset(root, SIZES)
    assert fingerprints(root) == before


def test_outdated_copy_is_regenerated(tmp_path):
    root = generate_shapes_dataset(tmp_path / "shapes", SIZES)
    marker = json.loads((root / MARKER_FILE).read_text())
    (root / MARKER_FILE).write_text(json.dumps({**marker, "version": GENERATOR_VERSION - 1}))
    (root / "stale.txt").write_text("old")
    ensure_shapes_dataset(root, SIZES)
    assert not (root / "stale.txt").exists() and json.loads((root / MARKER_FILE).read_text()) == marker
    assert [p.name for p in tmp_path.iterdir()] == ["shapes"]


def test_user_folder_without_marker_is_never_touched(tmp_path):
    root = tmp_path / "shapes"
    root.mkdir()
    (root / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="was not created by the built-in dataset generator"):
        ensure_shapes_dataset(root, SIZES)
    assert (root / "mine.txt").read_text() == "user data" and len(list(root.iterdir())) == 1


def test_concurrent_loser_keeps_the_winner(tmp_path, monkeypatch):
    winner = generate_shapes_dataset(tmp_path / "shapes", SIZES)
    before = fingerprints(winner)
    generate_shapes_dataset(tmp_path / "shapes", SIZES)  # rename onto an existing folder fails -> discarded
    assert fingerprints(winner) == before and [p.name for p in tmp_path.iterdir()] == ["shapes"]


def test_unknown_builtin_name(tmp_path):
    with pytest.raises(KeyError, match="unknown built-in dataset 'nope', available: shapes"):
        ensure_builtin_dataset("nope", tmp_path)


def test_labels_parse_with_class_check(tmp_path):
    root = generate_shapes_dataset(tmp_path / "s", {"train": 2})
    for label in (root / "labels" / "train").glob("*.txt"):
        parse_label_text(label.read_text(), nc=len(default_dataset.SHAPE_NAMES))
