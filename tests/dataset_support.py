"""Helpers for the dataset-pipeline tests: tiny YOLO-format datasets written with cv2 and file fingerprints."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np


def write_image(path: Path, height: int = 64, width: int = 80, seed: int = 0, suffix_params=()) -> Path:
    """Write a smooth random colour image (h, w) with cv2 (format from the suffix); returns the path."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image, list(suffix_params))
    return path


def write_label(path: Path, text: str | None) -> None:
    """Write a label file (None: do not create one)."""
    if text is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def make_dataset(root: Path, labels: dict[str, str | None], split: str = "train", size=(64, 80)) -> Path:
    """Write ``images/<split>/<stem>.jpg`` and ``labels/<split>/<stem>.txt`` for each stem; returns the images dir."""
    for i, (stem, text) in enumerate(labels.items()):
        write_image(root / "images" / split / f"{stem}.jpg", size[0], size[1], seed=i)
        write_label(root / "labels" / split / f"{stem}.txt", text)
    return root / "images" / split


def fingerprints(root: Path) -> dict[str, tuple[str, int]]:
    """Map every file under ``root`` (except label caches) to (sha256, mtime_ns)."""
    result = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix != ".cache":
            result[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return result


def write_shapes_yaml(base: Path, counts: dict[str, int], names: dict[int, str] | None = None) -> str:
    """Generate ``base/tiny`` with the built-in shapes generator (``counts`` images per split); returns its YAML.

    ``names`` defaults to the generator's eight class names.
    """
    import yaml

    from utils.data.builtin import generate_shapes_dataset
    from utils.data.shapes import SHAPE_NAMES

    root = generate_shapes_dataset(base / "tiny", counts)
    file = base / "tiny.yaml"
    file.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": names or dict(enumerate(SHAPE_NAMES))}))
    return str(file)
