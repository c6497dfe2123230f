"""Dataset file conventions: supported formats, image lists and the ``images/`` -> ``labels/`` path rule."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

IMG_FORMATS = "bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm"  # image suffixes
VID_FORMATS = "asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv"  # video suffixes

PathLike = Union[str, Path]


def img2label_paths(img_paths: Sequence[str]) -> list[str]:
    """Return the label file path for each image path.

    The **last** ``/images/`` directory component is replaced by ``/labels/`` and the extension by ``.txt``
    (``a/images/train/x.jpg`` -> ``a/labels/train/x.txt``). A path without ``/images/`` keeps its directory.
    """
    images_part, labels_part = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    label_paths = []
    for img_path in img_paths:
        head, found, tail = str(img_path).rpartition(images_part)
        swapped = head + labels_part + tail if found else tail
        label_paths.append(os.path.splitext(swapped)[0] + ".txt")
    return label_paths


def has_image_suffix(path: PathLike) -> bool:
    """Return True when the file name ends with one of ``IMG_FORMATS`` (case-insensitive)."""
    return os.path.splitext(str(path))[1][1:].lower() in IMG_FORMATS


def _read_list_file(list_file: Path) -> list[str]:
    """Return the image paths listed one per line in a ``.txt`` file; ``./x`` lines are relative to its folder."""
    parent = str(list_file.parent) + os.sep
    lines = list_file.read_text(encoding="utf-8").splitlines()
    entries = [line.strip() for line in lines if line.strip()]
    return [parent + entry[2:] if entry.startswith("./") else entry for entry in entries]


def _expand_source(source: Path) -> list[str]:
    if source.is_dir():
        return [str(p) for p in source.rglob("*") if p.is_file()]
    if source.is_file():
        return _read_list_file(source)
    raise FileNotFoundError(f"{source} does not exist")


def list_image_files(path: Union[PathLike, Sequence[PathLike]], prefix: str = "") -> list[str]:
    """Return the sorted image files named by ``path``.

    Args:
        path: an image directory (searched recursively), a ``.txt`` file listing images (one per line, ``./x``
            relative to the list's folder, other relative paths relative to the working directory), or a list of
            either.
        prefix: log prefix used in error messages.

    Raises:
        FileNotFoundError: a named directory/list does not exist, or no images were found.
    """
    sources = path if isinstance(path, (list, tuple)) else [path]
    files: list[str] = []
    for source in sources:
        try:
            files += _expand_source(Path(source))
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{prefix}Error loading data from {source}: {error}") from None
    images = sorted(f.replace("/", os.sep) for f in files if has_image_suffix(f))
    if not images:
        raise FileNotFoundError(f"{prefix}No images found in {path} (supported formats: {', '.join(IMG_FORMATS)})")
    return images
