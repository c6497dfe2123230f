"""Tests for utils/data/labels.py: every bad-input case, counts, messages, untouched user files, cache validity."""

from __future__ import annotations

import os
import re

import cv2
import numpy as np
import pytest

import utils.data.labels as label_cache
from tests.dataset_support import fingerprints, make_dataset, write_image
from utils.data.dataset import LoadImagesAndLabels
from utils.data.labels import (
    CACHE_VERSION,
    LabelError,
    cache_labels,
    load_label_cache,
    parse_label_text,
    summary_text,
    verify_image_label,
)

# ---------------------------------------------------------------- parse_label_text


def test_parse_boxes_exact():
    labels, segments, duplicates = parse_label_text("0 0.5 0.5 0.2 0.4\n3 0.1 0.2 0.1 0.1\n", nc=4)
    np.testing.assert_array_equal(labels, np.array([[0, 0.5, 0.5, 0.2, 0.4], [3, 0.1, 0.2, 0.1, 0.1]], np.float32))
    assert segments == [] and duplicates == 0


def test_parse_polygon_becomes_box_and_segment():
    labels, segments, _ = parse_label_text("2 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n")
    np.testing.assert_allclose(labels, [[2, 0.3, 0.4, 0.4, 0.4]], atol=1e-7)
    np.testing.assert_allclose(segments[0], [[0.1, 0.2], [0.5, 0.2], [0.5, 0.6], [0.1, 0.6]])


def test_parse_mixed_box_and_polygon_rows_keep_one_segment_per_row():
    labels, segments, _ = parse_label_text("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.3 0.1 0.2 0.3\n")
    assert len(segments) == 2 == len(labels)
    np.testing.assert_allclose(segments[0], [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]], atol=1e-7)
    np.testing.assert_allclose(labels[1], [1, 0.2, 0.2, 0.2, 0.2], atol=1e-7)


def test_parse_duplicates_removed_keeping_first_order():
    labels, _, duplicates = parse_label_text("1 0.5 0.5 0.1 0.1\n0 0.2 0.2 0.1 0.1\n1 0.5 0.5 0.1 0.1\n")
    assert duplicates == 1
    np.testing.assert_array_equal(labels[:, 0], [1, 0])


def test_parse_empty_and_blank_lines():
    labels, segments, duplicates = parse_label_text("\n  \n")
    assert labels.shape == (0, 5) and segments == [] and duplicates == 0


@pytest.mark.parametrize("text, message", [
    ("0 0.5 0.5 0.1\n", "line 1: labels require 5 columns"),
    ("0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1 0.3\n", "line 2: labels require 5 columns"),
    ("0 0.1 0.1 0.2 0.1 0.2 0.2 0.1\n", "line 1: labels require 5 columns"),  # odd number of coordinates
    ("0 -0.1 0.5 0.1 0.1\n", "line 1: negative label values [-0.1]"),
    ("0 0.5 1.2 0.1 0.1\n", "line 1: non-normalized or out of bounds coordinates [1.2]"),
    ("5 0.5 0.5 0.1 0.1\n", "line 1: class id 5 outside the dataset's 3 names (0-2)"),
    ("1.5 0.5 0.5 0.1 0.1\n", "line 1: class id 1.5 is not a non-negative integer"),
    ("0 0.5 abc 0.1 0.1\n", "line 1: non-numeric value"),
    ("0 0.5 nan 0.1 0.1\n", "line 1: non-finite label values"),
])
def test_parse_rejects_bad_rows_naming_the_line(text, message):
    with pytest.raises(LabelError, match=re.escape(message)):
        parse_label_text(text, nc=3)


# ---------------------------------------------------------------- verify_image_label


def test_verify_cases(tmp_path):
    image = write_image(tmp_path / "images" / "a.jpg")
    label = tmp_path / "labels" / "a.txt"
    record = verify_image_label((str(image), str(label), ""))
    assert (record.missing, record.found, record.empty, record.corrupt) == (1, 0, 0, 0)
    assert record.shape == (80, 64) and record.labels.shape == (0, 5)
    label.parent.mkdir()
    label.write_text("")
    record = verify_image_label((str(image), str(label), ""))
    assert (record.missing, record.found, record.empty, record.corrupt) == (0, 1, 1, 0)
    label.write_text("0 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.5 0.5\n")
    record = verify_image_label((str(image), str(label), "", 1))
    assert (record.found, record.corrupt) == (1, 0) and len(record.labels) == 1
    assert record.message == f"WARNING ⚠️ {label}: 1 duplicate labels removed"


def _corrupt_files(folder):
    """Bad images: garbage bytes, zero bytes, too small, a GIF named .jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "garbage.jpg").write_bytes(b"this is not an image")
    (folder / "zero.jpg").write_bytes(b"")
    write_image(folder / "tiny.png", 8, 30)
    from PIL import Image

    Image.new("RGB", (40, 40)).save(folder / "gif.jpg", format="GIF")
    return {"garbage.jpg": "cannot identify image file", "zero.jpg": "cannot identify image file",
            "tiny.png": "image size 30x8 is below the 10x10 pixel minimum", "gif.jpg": "invalid image format GIF"}


def test_verify_bad_images_are_corrupt_with_reason(tmp_path):
    for name, reason in _corrupt_files(tmp_path).items():
        record = verify_image_label((str(tmp_path / name), str(tmp_path / "none.txt"), "p: "))
        assert record.corrupt == 1 and record.labels is None
        assert record.message.startswith(f"p: WARNING ⚠️ {tmp_path / name}: ignoring corrupt image/label: ")
        assert reason in record.message


def test_truncated_jpeg_is_used_and_left_unchanged(tmp_path):
    full = write_image(tmp_path / "full.jpg", 120, 160, seed=3)
    data = full.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    before = truncated.read_bytes()
    record = verify_image_label((str(truncated), str(tmp_path / "none.txt"), ""))
    assert record.corrupt == 0 and record.shape == (160, 120)
    assert "truncated JPEG (no end marker): using the decodable part, file left unchanged" in record.message
    assert truncated.read_bytes() == before
    assert cv2.imread(str(truncated)).shape == (120, 160, 3)


def test_label_file_problems_name_the_label_file(tmp_path):
    image = write_image(tmp_path / "images" / "a.jpg")
    label = tmp_path / "labels" / "a.txt"
    label.parent.mkdir()
    label.write_bytes(b"\xff\xfe\x00 bad utf8")
    record = verify_image_label((str(image), str(label), ""))
    assert record.corrupt == 1 and f"{label}: ignoring corrupt image/label" in record.message


# ---------------------------------------------------------------- whole dataset: counts, messages, user files


def _bad_dataset(root):
    images = make_dataset(root, {
        "good": "0 0.5 0.5 0.2 0.2\n",
        "missing": None,
        "empty": "",
        "dups": "1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
        "columns": "0 0.5 0.5 0.2\n",
        "negative": "0 -0.5 0.5 0.2 0.2\n",
        "outside": "0 0.5 1.5 0.2 0.2\n",
        "class": "7 0.5 0.5 0.2 0.2\n",
        "polygon": "1 0.1 0.1 0.4 0.1 0.4 0.4\n",
    })
    _corrupt_files(images)
    data = (images / "good.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return images


def test_dataset_continues_counts_and_names_files(tmp_path, log_text):
    images = _bad_dataset(tmp_path)
    before = fingerprints(tmp_path)
    dataset = LoadImagesAndLabels(str(images), img_size=64, augment=True, nc=3, prefix="train: ")
    # 14 files: 4 bad images + 4 bad label files are corrupt; missing + empty (+ truncated, no labels) background
    usable = {os.path.basename(f) for f in dataset.im_files}
    assert usable == {"good.jpg", "missing.jpg", "empty.jpg", "dups.jpg", "polygon.jpg", "truncated.jpg"}
    text = log_text.text
    assert "train: Scanning" in text and "6 images, 3 backgrounds, 8 corrupt" in text
    for name in ("columns", "negative", "outside", "class"):
        assert f"{tmp_path / 'labels' / 'train' / name}.txt: ignoring corrupt image/label: line 1:" in text
    for name in ("garbage.jpg", "zero.jpg", "tiny.png", "gif.jpg"):
        assert f"{images / name}: ignoring corrupt image/label" in text
    assert "1 duplicate labels removed" in text and "truncated JPEG" in text
    assert fingerprints(tmp_path) == before  # user files byte-identical, not even touched
    for i in range(len(dataset)):
        image, labels, _, _ = dataset[i]
        assert image.shape == (3, 64, 64) and labels.shape[1] == 6


def test_summary_text_counts():
    assert summary_text([5, 2, 1, 3]) == "7 images, 3 backgrounds, 3 corrupt"


# ---------------------------------------------------------------- cache validity


def test_cache_reused_then_rebuilt_when_a_label_changes(tmp_path, monkeypatch):
    images = make_dataset(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": "1 0.3 0.3 0.1 0.1\n"})
    ims = sorted(str(p) for p in images.iterdir())
    labels = [p.replace("/images/", "/labels/").replace(".jpg", ".txt") for p in ims]
    cache = tmp_path / "labels" / "train.cache"
    records, from_cache = cache_labels(ims, labels, cache)
    assert not from_cache and cache.is_file()
    scans = []
    real_scan = label_cache.scan_labels
    monkeypatch.setattr(label_cache, "scan_labels", lambda *a, **k: scans.append(1) or real_scan(*a, **k))
    again, from_cache = cache_labels(ims, labels, cache)
    assert from_cache and not scans
    for old, new in zip(records, again, strict=True):
        np.testing.assert_array_equal(old.labels, new.labels)
        assert old.shape == new.shape and old.message == new.message
    (tmp_path / "labels" / "train" / "b.txt").write_text("1 0.3 0.3 0.1 0.1\n0 0.6 0.6 0.2 0.2\n")
    rebuilt, from_cache = cache_labels(ims, labels, cache)
    assert not from_cache and scans == [1] and len(rebuilt[1].labels) == 2
    _, from_cache = cache_labels(ims, labels, cache, nc=1)  # a different class count invalidates it too
    assert not from_cache


def test_cache_file_format_and_foreign_cache(tmp_path):
    images = make_dataset(tmp_path, {"a": "0 0.1 0.2 0.3 0.2 0.3 0.4\n", "b": "1 0.5 0.5 0.1 0.1\n"})
    ims = [str(images / "a.jpg"), str(images / "b.jpg")]
    labels = [str(tmp_path / "labels" / "train" / f"{s}.txt") for s in "ab"]
    cache = tmp_path / "x.cache"
    built, _ = cache_labels(ims, labels, cache)
    with np.load(cache, allow_pickle=False) as data:  # loads without pickle
        assert str(data["version"]) == CACHE_VERSION
    loaded, from_cache = cache_labels(ims, labels, cache)
    assert from_cache and len(loaded[0].segments) == 1 and loaded[1].segments == []
    np.testing.assert_array_equal(loaded[0].segments[0], built[0].segments[0])
    with open(cache, "wb") as handle:  # an upstream-style pickled dict: never unpickled, just rebuilt
        np.save(handle, np.array([{"version": 0.6}], dtype=object), allow_pickle=True)
    assert load_label_cache(cache, "anything") is None
    _, from_cache = cache_labels(ims, labels, cache)
    assert not from_cache


def test_unwritable_cache_folder_warns_once_and_continues(tmp_path, monkeypatch, log_text):
    images = make_dataset(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(label_cache, "atomic_write_bytes", refuse)
    dataset = LoadImagesAndLabels(str(images), img_size=64)
    assert len(dataset) == 1
    assert log_text.text.count("is not writeable: read-only file system") == 1
    assert not (tmp_path / "labels" / "train.cache").exists()


def test_process_pool_scan_matches_thread_scan(tmp_path, monkeypatch):
    images = make_dataset(tmp_path, {f"i{k}": f"{k % 3} 0.5 0.5 0.2 0.2\n" for k in range(6)})
    ims = sorted(str(p) for p in images.iterdir())
    labels = [p.replace("/images/", "/labels/").replace(".jpg", ".txt") for p in ims]
    threaded = label_cache.scan_labels(ims, labels, tmp_path / "a.cache")
    monkeypatch.setattr(label_cache, "PROCESS_POOL_MIN_FILES", 1)
    pooled = label_cache.scan_labels(ims, labels, tmp_path / "b.cache", workers=2)
    assert [r.im_file for r in pooled] == ims
    for a, b in zip(threaded, pooled, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
