"""Label verification and the ``.cache`` file of a YOLO-format dataset.

Every image is checked (readable, a supported format, at least 10x10 pixels, JPEG end marker) and its label file
parsed: ``cls x y w h`` rows normalised to [0, 1], or polygon rows ``cls x1 y1 x2 y2 ...`` (>= 3 points) that become
a box plus a segment. Problems are counted and reported with the file (and line) name; user files are only read,
never rewritten. Results are cached in ``<labels dir>.cache`` (an ``.npz`` archive without pickled objects, loaded
with ``allow_pickle=False``) keyed by a version and a hash of every image/label path, size and modification time.
"""

from __future__ import annotations

import hashlib
import io
import os
from multiprocessing.pool import Pool, ThreadPool
from pathlib import Path
from typing import NamedTuple, Sequence

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from utils.boxes import segments2boxes
from utils.data.paths import IMG_FORMATS
from utils.files import atomic_write_bytes
from utils.logging import LOGGER

CACHE_VERSION = "yolo-labels-1"
NUM_THREADS = max(1, min(8, os.cpu_count() or 1))
PROCESS_POOL_MIN_FILES = 2000  # below this a thread pool is faster than forking processes
EXIF_ORIENTATION_TAG = 274
BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"


class LabelRecord(NamedTuple):
    """Result of checking one image/label pair.

    ``labels`` is (n, 5) float32 [cls, x, y, w, h] normalised; ``shape`` is the EXIF-corrected (width, height);
    ``segments`` holds (k, 2) normalised polygons (empty unless the file has polygon rows). The four counters are
    0/1: label file missing, found, empty, or image/label corrupt (then ``labels`` is None).
    """

    im_file: str
    labels: np.ndarray | None
    shape: tuple[int, int] | None
    segments: list
    missing: int
    found: int
    empty: int
    corrupt: int
    message: str


class LabelError(ValueError):
    """A label file problem that makes the image unusable (the message names the line)."""


def exif_size(image: Image.Image) -> tuple[int, int]:
    """Return the (width, height) of a PIL image after its EXIF orientation (values 5-8 swap the axes)."""
    width, height = image.size
    try:
        if image.getexif().get(EXIF_ORIENTATION_TAG) in (5, 6, 7, 8):
            return height, width
    except Exception:  # unreadable EXIF blocks are ignored, as viewers do
        pass
    return width, height


def check_image(im_file: str) -> tuple[tuple[int, int], str]:
    """Verify one image file and return ((width, height), warning text or '').

    Raises:
        ValueError/OSError: the image is unreadable, too small or not a supported format.
    """
    with Image.open(im_file) as image:
        image.verify()
        shape = exif_size(image)
        image_format = (image.format or "").lower()
    if shape[0] < 10 or shape[1] < 10:
        raise ValueError(f"image size {shape[0]}x{shape[1]} is below the 10x10 pixel minimum")
    if image_format not in IMG_FORMATS:
        raise ValueError(f"invalid image format {image_format.upper() or 'unknown'}")
    if image_format in ("jpeg", "mpo"):
        with open(im_file, "rb") as handle:
            handle.seek(-2, os.SEEK_END)
            if handle.read() != b"\xff\xd9":
                if cv2.imread(im_file) is None:
                    raise ValueError("truncated JPEG that cannot be decoded")
                return shape, "truncated JPEG (no end marker): using the decodable part, file left unchanged"
    return shape, ""


def _parse_rows(lines: list[str]) -> list[np.ndarray]:
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(np.array(line.split(), dtype=np.float64))
        except ValueError:
            raise LabelError(f"line {number}: non-numeric value in '{line.strip()[:60]}'") from None
    return rows


def _check_row(row: np.ndarray, number: int, nc: int | None) -> None:
    count = len(row)
    if count != 5 and (count < 7 or count % 2 == 0):
        raise LabelError(f"line {number}: labels require 5 columns (or a class and >= 3 polygon points), "
                         f"{count} columns detected")
    if not np.isfinite(row).all():
        raise LabelError(f"line {number}: non-finite label values {row.tolist()}")
    if row[0] != int(row[0]) or row[0] < 0:
        raise LabelError(f"line {number}: class id {row[0]:g} is not a non-negative integer")
    if nc is not None and row[0] >= nc:
        raise LabelError(f"line {number}: class id {int(row[0])} outside the dataset's {nc} names (0-{nc - 1})")
    if (row[1:] < 0).any():
        raise LabelError(f"line {number}: negative label values {row[1:][row[1:] < 0].tolist()}")
    if (row[1:] > 1).any():
        raise LabelError(f"line {number}: non-normalized or out of bounds coordinates {row[1:][row[1:] > 1].tolist()}")


class ParsedLabels(NamedTuple):
    """One label file parsed: labels (n, 5) float32 [cls, x, y, w, h] normalised, segments (see
    :func:`parse_label_text`), the number of duplicate rows removed and warnings naming a line (degenerate polygons)."""

    labels: np.ndarray
    segments: list
    duplicates: int
    warnings: list


def parse_label_text(text: str, nc: int | None = None) -> tuple[np.ndarray, list[np.ndarray], int]:
    """Parse the text of one label file.

    Args:
        text: file contents.
        nc: number of classes; class ids >= nc are errors (None skips the check).

    Returns:
        (labels (n, 5) float32 [cls, x, y, w, h] normalised, segments (one (k, 2) polygon per row when any row is
        a polygon, box rows becoming their 4 corners; else empty), number of duplicate rows removed).

    Raises:
        LabelError: a row has the wrong column count, a bad class id or coordinates outside [0, 1].
    """
    return tuple(parse_labels(text, nc))[:3]


def parse_labels(text: str, nc: int | None = None) -> ParsedLabels:
    """:func:`parse_label_text` plus warnings for polygons that enclose no area (kept: their masks are empty)."""
    lines = [line for line in text.splitlines() if line.strip()]
    rows = _parse_rows(lines)
    for number, row in enumerate(rows, 1):
        _check_row(row, number, nc)
    warnings = [f"line {number}: polygon encloses no area (points on one line); its mask is empty"
                for number, row in enumerate(rows, 1) if len(row) > 5 and _polygon_area(row[1:]) <= 0.0]
    first_index: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        first_index.setdefault(tuple(row), i)
    keep = sorted(first_index.values())
    duplicates = len(rows) - len(keep)
    rows = [rows[i] for i in keep]
    if not rows:
        return ParsedLabels(np.zeros((0, 5), dtype=np.float32), [], 0, warnings)
    classes = np.array([row[0] for row in rows], dtype=np.float32).reshape(-1, 1)
    segments = []
    if any(len(row) > 5 for row in rows):
        segments = [row[1:].reshape(-1, 2).astype(np.float32) if len(row) > 5 else _box_corners(row[1:])
                    for row in rows]
        boxes = segments2boxes(segments)
    else:
        boxes = np.array([row[1:] for row in rows], dtype=np.float32)
    labels = np.concatenate((classes, boxes.astype(np.float32)), axis=1)
    return ParsedLabels(labels, segments, duplicates, warnings)


def _polygon_area(flat_xy: np.ndarray) -> float:
    """Absolute shoelace area of a polygon given as flat normalised ``x1 y1 x2 y2 ...``."""
    x, y = flat_xy[0::2], flat_xy[1::2]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _box_corners(xywh: np.ndarray) -> np.ndarray:
    x, y, w, h = xywh
    return np.array([[x - w / 2, y - h / 2], [x + w / 2, y - h / 2], [x + w / 2, y + h / 2], [x - w / 2, y + h / 2]],
                    dtype=np.float32)


def verify_image_label(args: tuple) -> LabelRecord:
    """Check one (im_file, label_file, prefix[, nc]) tuple; never raises, never writes (see ``LabelRecord``)."""
    im_file, label_file, prefix = args[:3]
    nc = args[3] if len(args) > 3 else None
    try:
        shape, message = check_image(im_file)
        message = f"{prefix}WARNING ⚠️ {im_file}: {message}" if message else ""
        if not os.path.isfile(label_file):
            return LabelRecord(im_file, np.zeros((0, 5), np.float32), shape, [], 1, 0, 0, 0, message)
        with open(label_file, encoding="utf-8") as handle:
            text = handle.read()
        labels, segments, duplicates, warnings = parse_labels(text, nc)
        notes = [f"{prefix}WARNING ⚠️ {label_file}: {w}" for w in warnings]
        if duplicates:
            notes.append(f"{prefix}WARNING ⚠️ {label_file}: {duplicates} duplicate labels removed")
        message = "\n".join([m for m in (message, *notes) if m])
        return LabelRecord(im_file, labels, shape, segments, 0, 1, int(len(labels) == 0), 0, message)
    except Exception as error:
        where = label_file if isinstance(error, (LabelError, UnicodeDecodeError)) else im_file
        message = f"{prefix}WARNING ⚠️ {where}: ignoring corrupt image/label: {error}"
        return LabelRecord(im_file, None, None, [], 0, 0, 0, 1, message)


def files_hash(paths: Sequence[str]) -> str:
    """Return a sha256 hex digest of each path with its size and mtime (or 'missing'), in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def scan_labels(im_files: Sequence[str], label_files: Sequence[str], cache_path: Path, prefix: str = "",
                nc: int | None = None, workers: int = NUM_THREADS) -> list[LabelRecord]:
    """Verify all pairs in parallel with a tqdm bar, log each warning, and return the records in input order."""
    jobs = [(im, lb, prefix, nc) for im, lb in zip(im_files, label_files, strict=True)]
    pool_type = Pool if len(jobs) >= PROCESS_POOL_MIN_FILES and workers > 1 else ThreadPool
    records, counts = [], np.zeros(4, dtype=int)  # found, missing, empty, corrupt
    desc = f"{prefix}Scanning {cache_path.parent / cache_path.stem}..."
    with pool_type(max(1, workers)) as pool:
        bar = tqdm(pool.imap(verify_image_label, jobs, chunksize=16), desc=desc, total=len(jobs),
                   bar_format=BAR_FORMAT, disable=len(jobs) < 64)
        for record in bar:
            records.append(record)
            counts += (record.found, record.missing, record.empty, record.corrupt)
            bar.desc = f"{desc} {summary_text(counts)}"
        bar.close()
    for record in records:
        if record.message:
            LOGGER.warning(record.message)
    return records


def summary_text(counts: Sequence[int]) -> str:
    """Return 'N images, M backgrounds, K corrupt' from (found, missing, empty, corrupt) counts.

    N counts usable images (label file found or missing), M images without labels (missing or empty label file).
    """
    found, missing, empty, corrupt = (int(c) for c in counts)
    return f"{found + missing} images, {missing + empty} backgrounds, {corrupt} corrupt"


def record_counts(records: Sequence[LabelRecord]) -> np.ndarray:
    """Return the summed (found, missing, empty, corrupt) counters of ``records``, shape (4,)."""
    if not records:
        return np.zeros(4, dtype=int)
    return np.array([(r.found, r.missing, r.empty, r.corrupt) for r in records], dtype=int).sum(0)


def _records_to_arrays(records: Sequence[LabelRecord], key: str) -> dict[str, np.ndarray]:
    labels = [r.labels if r.labels is not None else np.zeros((0, 5), np.float32) for r in records]
    segments = [s for r in records for s in r.segments]
    return {
        "version": np.array(CACHE_VERSION), "hash": np.array(key),
        "im_files": np.array([r.im_file for r in records], dtype=str),
        "flags": np.array([(r.missing, r.found, r.empty, r.corrupt) for r in records], dtype=np.int8).reshape(-1, 4),
        "shapes": np.array([r.shape or (0, 0) for r in records], dtype=np.int64).reshape(-1, 2),
        "label_counts": np.array([len(lb) for lb in labels], dtype=np.int64),
        "labels": np.concatenate(labels, 0) if labels else np.zeros((0, 5), np.float32),
        "segment_counts": np.array([len(r.segments) for r in records], dtype=np.int64),
        "segment_lengths": np.array([len(s) for s in segments], dtype=np.int64),
        "segment_points": np.concatenate(segments, 0) if segments else np.zeros((0, 2), np.float32),
        "messages": np.array([r.message for r in records], dtype=str),
    }


def _split(array: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    return np.split(array, np.cumsum(counts)[:-1]) if len(counts) else []


def _arrays_to_records(data) -> list[LabelRecord]:
    flags, shapes = data["flags"], data["shapes"]
    labels = _split(data["labels"], data["label_counts"])
    polygons = _split(data["segment_points"], data["segment_lengths"])
    per_image = np.cumsum(np.concatenate(([0], data["segment_counts"])))
    records = []
    for i, (im_file, message) in enumerate(zip(data["im_files"].tolist(), data["messages"].tolist(), strict=True)):
        missing, found, empty, corrupt = (int(v) for v in flags[i])
        segments = polygons[per_image[i]:per_image[i + 1]]
        records.append(LabelRecord(im_file, None if corrupt else labels[i], None if corrupt else tuple(shapes[i]),
                                   segments, missing, found, empty, corrupt, message))
    return records


def cache_key(im_files: Sequence[str], label_files: Sequence[str], nc: int | None) -> str:
    """Return the cache hash: every label and image path with size and mtime, plus the class count."""
    return files_hash([*label_files, *im_files]) + f"-nc{nc}"


def load_label_cache(cache_path: Path, key: str) -> list[LabelRecord] | None:
    """Return the cached records if ``cache_path`` holds this version and ``key``, else None (never raises)."""
    try:
        with np.load(cache_path, allow_pickle=False) as data:
            if str(data["version"]) != CACHE_VERSION or str(data["hash"]) != key:
                return None
            return _arrays_to_records(data)
    except Exception:  # missing, foreign (e.g. pickled) or damaged cache files are rebuilt
        return None


def save_label_cache(cache_path: Path, records: Sequence[LabelRecord], key: str, prefix: str = "") -> bool:
    """Write the cache atomically (temp file + rename); warn once and return False if the folder is not writable."""
    buffer = io.BytesIO()
    np.savez(buffer, **_records_to_arrays(records, key))
    try:
        atomic_write_bytes(cache_path, buffer.getvalue())
    except OSError as error:
        LOGGER.warning(f"{prefix}WARNING ⚠️ Cache directory {cache_path.parent} is not writeable: {error}")
        return False
    LOGGER.info(f"{prefix}New cache created: {cache_path}")
    return True


def cache_labels(im_files: Sequence[str], label_files: Sequence[str], cache_path: Path, prefix: str = "",
                 nc: int | None = None, verbose: bool = True) -> tuple[list[LabelRecord], bool]:
    """Return (records in ``im_files`` order, loaded_from_cache), scanning and caching when the cache is stale.

    A valid cache prints the same summary line and repeats its stored warnings.
    """
    key = cache_key(im_files, label_files, nc)
    records = load_label_cache(cache_path, key)
    if records is not None and [r.im_file for r in records] == list(im_files):
        if verbose:
            LOGGER.info(f"{prefix}Scanning {cache_path}... {summary_text(record_counts(records))}")
            for record in records:
                if record.message:
                    LOGGER.warning(record.message)
        return records, True
    records = scan_labels(im_files, label_files, cache_path, prefix, nc)
    if verbose:
        LOGGER.info(f"{prefix}Scanning {cache_path}... {summary_text(record_counts(records))}")
    save_label_cache(cache_path, records, key, prefix)
    return records, False
