"""Built-in synthetic datasets ``shapes`` (boxes) and ``shapes-seg`` (polygons): generated locally, deterministically.

Eight classes of filled geometric shapes (``SHAPE_NAMES``) of varied size (about 14 px up to 45% of the short
side), aspect, rotation, colour and shading are drawn on cluttered backgrounds (gradients, blotchy texture, noise,
and unlabelled distractors: lines, scribbles, irregular blobs, speckles), with partial overlaps, occasional blur
and JPEG artefacts. Labels are the amodal boxes of each shape in YOLO format. Images are 256-416 px per side.

``shapes-seg`` has the same images with one polygon per object instead of its box: the exact outline the shape was
drawn from (64-point circles and ellipses, the corners of polygons); a ring's hole is cut out by bridging the outline
to the hole in one polygon (:func:`label_polygon`). Polygons are amodal, like the boxes: an object partly covered by
a later one keeps its full outline.

Each dataset is written to ``<DATASETS_DIR>/<name>`` (see ``data/shapes.yaml``, ``data/shapes-seg.yaml``) on first
use: built in a temporary folder and renamed into place, with a version marker so later runs reuse it.
"""

from __future__ import annotations

import os
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from utils.data.builtin_cls import ensure_shapes_cls_dataset
from utils.data.generated import MARKER_FILE, build_atomically, ensure_generated, read_marker  # noqa: F401 (re-export)
from utils.data.shapes import SHAPE_NAMES, draw_background, draw_distractors, draw_shape, shape_polygons

GENERATOR_VERSION = 1
SPLIT_SIZES = {"train": 400, "val": 100}
SPLIT_SEEDS = {"train": 0, "val": 1}


def _marker(name: str, sizes: dict[str, int]) -> dict:
    return {"dataset": name, "version": GENERATOR_VERSION, "splits": sizes}


def _choose_size(rng: np.random.Generator, short_side: int) -> float:
    """Object radius in pixels, log-uniform between 7 and 22% of the short side (diameters ~14 px to 45%)."""
    return float(np.exp(rng.uniform(np.log(7.0), np.log(0.225 * short_side))))


def _overlaps_too_much(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    """True if ``box`` (xyxy) would hide more than 45% of an earlier box, or is mostly inside one."""
    if not boxes:
        return False
    others = np.array(boxes)
    inter_w = (np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])).clip(0)
    inter_h = (np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])).clip(0)
    inter = inter_w * inter_h
    other_areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    own_area = (box[2] - box[0]) * (box[3] - box[1])
    return bool((inter / other_areas > 0.45).any() or (inter / own_area > 0.6).any())


def _place_objects(rng: np.random.Generator, width: int, height: int, count: int) -> list[tuple[int, list]]:
    """Return up to ``count`` (class, polygons) placements that fit inside the image with limited occlusion."""
    placed, boxes = [], []
    for _ in range(count * 12):
        if len(placed) == count:
            break
        cls = int(rng.integers(len(SHAPE_NAMES)))
        radius = _choose_size(rng, min(width, height))
        centre = rng.uniform([radius, radius], [width - radius, height - radius])
        polygons = shape_polygons(SHAPE_NAMES[cls], centre, radius, rng)
        points = np.concatenate(polygons, 0)
        box = np.array([*points.min(0), *points.max(0)])
        if box[0] < 1 or box[1] < 1 or box[2] > width - 1 or box[3] > height - 1 or _overlaps_too_much(box, boxes):
            continue
        placed.append((cls, polygons))
        boxes.append(box)
    return placed


def render_scene(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, list[np.ndarray]]]]:
    """Draw one image; return (BGR uint8 image (h, w, 3), placed objects as (class, pixel polygons) in drawing
    order). The polygons are exact: the outline first, a ring's hole second (see ``shapes.shape_polygons``)."""
    width, height = (int(v) for v in rng.integers(256, 417, 2))
    image = draw_background(rng, width, height)
    draw_distractors(rng, image, behind=True)
    count = 0 if rng.random() < 0.04 else int(rng.integers(1, 9))
    placed = _place_objects(rng, width, height, count)
    for cls, polygons in placed:
        draw_shape(rng, image, SHAPE_NAMES[cls], polygons)
    draw_distractors(rng, image, behind=False)
    if rng.random() < 0.25:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=float(rng.uniform(0.5, 1.2)))
    return image, placed


def render_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image and return (BGR uint8 image (h, w, 3), labels (n, 5) [cls, x, y, w, h] normalised)."""
    image, placed = render_scene(rng)
    height, width = image.shape[:2]
    labels = []
    for cls, polygons in placed:
        points = np.concatenate(polygons, 0)
        (x1, y1), (x2, y2) = points.min(0), points.max(0)
        labels.append([cls, (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height])
    return image, np.array(labels, dtype=np.float64).reshape(-1, 5)


def label_polygon(polygons: list[np.ndarray]) -> np.ndarray:
    """One polygon (k, 2) for a shape's label: the outline, or for a ring the outline bridged to its hole.

    A ring (outline, hole) becomes ``outline, outline[0], hole[0], hole reversed..., hole[0]``: a cut from the
    outline's first point to the hole's first point, around the hole the other way and back along the same cut.
    The cut has no width, so filling the polygon (even-odd or non-zero rule) leaves the hole empty; the built-in
    rings put both first points on one horizontal line, where scan-line filling draws nothing for the cut.
    """
    if len(polygons) == 1:
        return polygons[0]
    outline, hole = polygons[0], polygons[1]
    return np.concatenate((outline, outline[:1], hole[:1], hole[:0:-1], hole[:1]), 0)


def render_segment_sample(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Like :func:`render_sample` (the same image for the same generator state) with polygon labels: returns
    (image, [(class, polygon (k, 2) normalised to [0, 1])])."""
    image, placed = render_scene(rng)
    size = np.array(image.shape[1::-1], dtype=np.float64)
    return image, [(cls, np.clip(label_polygon(polygons) / size, 0.0, 1.0)) for cls, polygons in placed]


def _write_sample(image_dir: Path, label_dir: Path, split: str, index: int, seed: int) -> None:
    rng = np.random.default_rng([seed, index, GENERATOR_VERSION])
    image, labels = render_sample(rng)
    quality = int(rng.integers(70, 96))
    lines = [f"{int(row[0])} {row[1]:.6f} {row[2]:.6f} {row[3]:.6f} {row[4]:.6f}" for row in labels]
    _write_files(image_dir, label_dir, f"{split}_{index:05d}", image, quality, lines)


def _write_segment_sample(image_dir: Path, label_dir: Path, split: str, index: int, seed: int) -> None:
    rng = np.random.default_rng([seed, index, GENERATOR_VERSION])
    image, objects = render_segment_sample(rng)
    quality = int(rng.integers(70, 96))
    lines = [f"{cls} " + " ".join(f"{v:.6f}" for v in polygon.reshape(-1)) for cls, polygon in objects]
    _write_files(image_dir, label_dir, f"{split}_{index:05d}", image, quality, lines)


def _write_files(image_dir: Path, label_dir: Path, stem: str, image: np.ndarray, quality: int,
                 lines: list[str]) -> None:
    cv2.imwrite(str(image_dir / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    (label_dir / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def _write_split(folder: Path, split: str, size: int, seed: int, writer: Callable = _write_sample) -> None:
    """Write ``size`` samples of one split (each a pure function of (seed, index), so threads cannot change it)."""
    image_dir, label_dir = folder / "images" / split, folder / "labels" / split
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    with ThreadPool(max(1, min(8, os.cpu_count() or 1))) as pool:
        pool.map(lambda index: writer(image_dir, label_dir, split, index, seed), range(size), chunksize=8)


def generate_shapes_dataset(root: Path, sizes: dict[str, int] = SPLIT_SIZES, name: str = "shapes") -> Path:
    """Generate the dataset ``name`` (``shapes``: boxes, ``shapes-seg``: polygons) into ``root`` atomically (temp
    folder + rename); returns ``root``. If another process finishes first, its copy is kept and this one discarded.
    """
    writer = WRITERS[name]

    def write(temp: Path) -> None:
        for split, size in sizes.items():
            _write_split(temp, split, size, SPLIT_SEEDS.get(split, 2), writer)

    return build_atomically(root, _marker(name, sizes), write)


def _is_current(root: Path, sizes: dict[str, int], name: str = "shapes") -> bool:
    marker = read_marker(root)
    return (marker is not None and marker.get("version") == GENERATOR_VERSION and marker.get("splits") == sizes
            and marker.get("dataset", "shapes") == name)


def ensure_shapes_dataset(root: Path, sizes: dict[str, int] = SPLIT_SIZES, name: str = "shapes") -> Path:
    """Return ``root`` holding the current built-in dataset ``name``, generating it if absent or outdated.

    A folder without the generator's marker is treated as user data and never touched.

    Raises:
        FileExistsError: ``root`` exists, is not empty and was not made by the generator.
    """
    return ensure_generated(root, _is_current(Path(root), sizes, name),
                            lambda: generate_shapes_dataset(root, sizes, name),
                            f"'{name}' dataset ({sum(sizes.values())} images)")


def ensure_shapes_seg_dataset(root: Path, sizes: dict[str, int] = SPLIT_SIZES) -> Path:
    """``ensure_shapes_dataset`` for ``shapes-seg``: the same images as ``shapes`` with polygon labels."""
    return ensure_shapes_dataset(root, sizes, "shapes-seg")


WRITERS: dict[str, Callable] = {"shapes": _write_sample, "shapes-seg": _write_segment_sample}
BUILTIN_DATASETS = {"shapes": ensure_shapes_dataset, "shapes-seg": ensure_shapes_seg_dataset,
                    "shapes-cls": ensure_shapes_cls_dataset}


def ensure_builtin_dataset(name: str, root: Path) -> Path:
    """Generate (if needed) the built-in dataset ``name`` in ``root``; raises KeyError for unknown names."""
    if name not in BUILTIN_DATASETS:
        raise KeyError(f"unknown built-in dataset '{name}', available: {', '.join(BUILTIN_DATASETS)}")
    return BUILTIN_DATASETS[name](Path(root))
