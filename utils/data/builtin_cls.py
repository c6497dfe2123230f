"""Built-in synthetic classification dataset ``shapes-cls``: ImageNet-style folders generated locally in seconds.

Each image shows one of the eight shapes of the detection dataset (``utils.data.shapes``), 22-45% of the short
side in radius (partly outside the frame at times), rotated, in a random colour with shading, a flat fill or a
texture (stripes, checks, noise), on the same cluttered backgrounds (gradients, blotches, lines, scribbles,
speckles), sometimes blurred, saved as JPEG at quality 70-95. Images are 96-160 px per side (not square, so the
centre crop and the random resized crop both matter).

Layout: ``<DATASETS_DIR>/shapes-cls/{train,val}/<class name>/<split>_<index>.jpg``, 1000 train and 100 val images
per class by default. Generation is deterministic (each image is a pure function of its split seed and index),
atomic (temporary folder + rename) and versioned (a marker file; a stale or partial copy is regenerated, a folder
without the marker is user data and never touched).
"""

from __future__ import annotations

import os
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from utils.data.generated import build_atomically, ensure_generated, read_marker
from utils.data.shapes import SHAPE_NAMES, draw_background, draw_shape, random_colours, shape_polygons

NAME = "shapes-cls"
GENERATOR_VERSION = 1
SPLIT_SIZES = {"train": 8000, "val": 800}
SPLIT_SEEDS = {"train": 10, "val": 11}
SIDE_RANGE = (96, 161)  # image sides in pixels, [low, high)


def _marker(sizes: dict[str, int]) -> dict:
    return {"dataset": NAME, "version": GENERATOR_VERSION, "splits": sizes}


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Return a multiplicative texture (h, w) float32 around 1: stripes, a checkerboard or smoothed noise."""
    kind = int(rng.integers(3))
    if kind == 2:
        noise = rng.normal(1.0, 0.35, (max(2, height // 4), max(2, width // 4))).astype(np.float32)
        return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    period = float(rng.uniform(4, 12))
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u = xs * np.float32(np.cos(angle)) + ys * np.float32(np.sin(angle))
    if kind == 0:
        return (1.0 + 0.45 * np.sign(np.sin(u * (2 * np.pi / period)))).astype(np.float32)
    v = -xs * np.float32(np.sin(angle)) + ys * np.float32(np.cos(angle))
    checks = np.sign(np.sin(u * (np.pi / period)) * np.sin(v * (np.pi / period)))
    return (1.0 + 0.4 * checks).astype(np.float32)


def _apply_texture(rng: np.random.Generator, image: np.ndarray, polygons: list[np.ndarray]) -> None:
    """Modulate the pixels inside the shape's outline (not its hole) by a texture, in place."""
    height, width = image.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(polygons[0]).astype(np.int32)], 255)
    if len(polygons) > 1:
        cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in polygons[1:]], 0)
    inside = mask > 0
    texture = _texture(rng, height, width)
    image[inside] = np.clip(image[inside].astype(np.float32) * texture[inside, None], 0, 255).astype(np.uint8)


def _draw_clutter(rng: np.random.Generator, image: np.ndarray, behind: bool) -> None:
    """Unlabelled clutter in place, sized for small images: lines, a scribble, a blob and specks (``behind``), or
    0-2 thin lines over the object; the colours of one call come from one vectorised draw."""
    height, width = image.shape[:2]
    size = np.array([width, height], dtype=np.float64)
    lines = int(rng.integers(1, 5)) if behind else (int(rng.integers(1, 3)) if rng.random() < 0.35 else 0)
    specks = int(rng.integers(0, 16)) if behind else 0
    colours = random_colours(rng, lines + specks + 2, (0.0, 1.0), (0.1, 1.0)).tolist()
    ends = (rng.uniform(0, 1, (lines, 2, 2)) * size).astype(int).tolist()
    for (start, end), colour in zip(ends, colours[:lines], strict=True):
        cv2.line(image, tuple(start), tuple(end), colour, int(rng.integers(1, 3)) if behind else 1, cv2.LINE_AA)
    if not behind:
        return
    if rng.random() < 0.5:
        points = (rng.uniform(0, 1, (int(rng.integers(3, 7)), 2)) * size).astype(np.int32)
        cv2.polylines(image, [points], False, colours[-1], 1, cv2.LINE_AA)
    if rng.random() < 0.5:
        centre, radius = rng.uniform(0, 1, 2) * size, rng.uniform(4, 0.15 * min(width, height))
        angles = np.sort(rng.uniform(0, 2 * np.pi, 10))
        radii = radius * rng.uniform(0.35, 1.0, 10)
        blob = centre + np.stack((radii * np.cos(angles), radii * np.sin(angles)), 1)
        cv2.fillPoly(image, [np.round(blob).astype(np.int32)], colours[-2], cv2.LINE_AA)
    centres = (rng.uniform(0, 1, (specks, 2)) * size).astype(int).tolist()
    for centre, colour in zip(centres, colours[lines:lines + specks], strict=True):
        cv2.circle(image, centre, 1, colour, -1, cv2.LINE_AA)


def render_cls_sample(rng: np.random.Generator, cls: int) -> np.ndarray:
    """Draw one BGR uint8 image (h, w, 3) whose only labelled object is a shape of class ``cls``."""
    width, height = (int(v) for v in rng.integers(*SIDE_RANGE, 2))
    image = draw_background(rng, width, height)
    _draw_clutter(rng, image, behind=True)
    short = min(width, height)
    radius = float(rng.uniform(0.22, 0.45)) * short
    margin = radius * 0.75  # the centre stays inside; up to a quarter of the radius may leave the frame
    centre = rng.uniform([margin, margin], [width - margin, height - margin])
    polygons = shape_polygons(SHAPE_NAMES[cls], centre, radius, rng)
    draw_shape(rng, image, SHAPE_NAMES[cls], polygons)
    if rng.random() < 0.35:
        _apply_texture(rng, image, polygons)
    _draw_clutter(rng, image, behind=False)
    if rng.random() < 0.25:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=float(rng.uniform(0.5, 1.2)))
    return image


def _write_sample(folder: Path, split: str, index: int, seed: int) -> None:
    rng = np.random.default_rng([seed, index, GENERATOR_VERSION])
    cls = index % len(SHAPE_NAMES)
    image = render_cls_sample(rng, cls)
    quality = int(rng.integers(70, 96))
    cv2.imwrite(str(folder / split / SHAPE_NAMES[cls] / f"{split}_{index:05d}.jpg"), image,
                [cv2.IMWRITE_JPEG_QUALITY, quality])


def generate_shapes_cls_dataset(root: Path, sizes: dict[str, int] = SPLIT_SIZES) -> Path:
    """Generate the dataset into ``root`` atomically; returns ``root`` (classes balanced: index modulo 8)."""
    def write(temp: Path) -> None:
        for split, size in sizes.items():
            for name in SHAPE_NAMES:
                (temp / split / name).mkdir(parents=True)
            seed = SPLIT_SEEDS.get(split, 12)
            jobs = [(temp, split, index, seed) for index in range(size)]
            with get_context("fork").Pool(max(1, min(8, os.cpu_count() or 1))) as pool:
                pool.starmap(_write_sample, jobs, chunksize=64)

    return build_atomically(root, _marker(sizes), write)


def ensure_shapes_cls_dataset(root: Path, sizes: dict[str, int] = SPLIT_SIZES) -> Path:
    """Return ``root`` holding the current ``shapes-cls`` dataset, generating it when absent or outdated.

    Raises:
        FileExistsError: ``root`` exists, is not empty and was not made by a generator.
    """
    current = read_marker(Path(root)) == _marker(sizes)
    return ensure_generated(root, current, lambda: generate_shapes_cls_dataset(root, sizes),
                            f"'{NAME}' classification dataset ({sum(sizes.values())} images)")
