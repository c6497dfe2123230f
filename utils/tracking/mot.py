"""MOTChallenge files: tracker/ground-truth text files and ``seqinfo.ini``.

Text format, one box per line, comma separated::

    frame, id, bb_left, bb_top, bb_width, bb_height, conf, x, y, z          (tracker results: x = y = z = -1)
    frame, id, bb_left, bb_top, bb_width, bb_height, consider, class, visibility   (ground truth, gt/gt.txt)

Frames count from 1, boxes are in pixels. In ground truth, ``consider`` 0 marks a box to ignore (neither missed nor
a false positive when a result overlaps it). A sequence folder holds ``seqinfo.ini``, ``img1/`` (frames
``000001.jpg`` ...) and ``gt/gt.txt``.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from utils.data.paths import VID_FORMATS

__all__ = ["MotSequence", "find_sequences", "format_mot_lines", "read_mot_file", "read_seqinfo", "seqinfo_text",
           "write_mot_file"]

PathLike = Union[str, Path]


def format_mot_lines(frame: int, tracks: np.ndarray) -> list[str]:
    """Return one MOTChallenge result line per track of one frame.

    Args:
        frame: 1-based frame number.
        tracks: (m, 6+) ``[x1, y1, x2, y2, track_id, conf, ...]`` in pixels.

    Returns:
        ``'frame,id,left,top,width,height,conf,-1,-1,-1'`` strings: box values with 2 decimals, conf with 4.
    """
    lines = []
    for x1, y1, x2, y2, track_id, conf in np.asarray(tracks, dtype=np.float64)[:, :6].tolist():
        lines.append(f"{int(frame)},{int(track_id)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{conf:.4f},-1,-1,-1")
    return lines


def write_mot_file(file: PathLike, rows: np.ndarray) -> None:
    """Write (n, 7) ``[frame, id, left, top, width, height, conf]`` rows as a MOTChallenge result file."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    lines = []
    for frame in np.unique(rows[:, 0]).astype(int).tolist():
        r = rows[rows[:, 0] == frame]
        xyxy = np.column_stack([r[:, 2:4], r[:, 2:4] + r[:, 4:6], r[:, 1], r[:, 6]])
        lines += format_mot_lines(frame, xyxy)
    Path(file).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def read_mot_file(file: PathLike, min_columns: int = 6) -> np.ndarray:
    """Read a MOTChallenge text file into an (n, 10) float64 array (missing trailing columns filled as below).

    Columns: frame, id, left, top, width, height, conf (default 1), class (default -1), visibility (default -1),
    z (default -1). Blank lines are skipped. An empty file gives (0, 10).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line has fewer than ``min_columns`` values, a value that is not a number, a frame below 1, or
            a negative width/height; the message names the file and line.
    """
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"MOT file not found: {file}")
    rows = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p for p in line.replace(" ", ",").split(",") if p]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"{file}:{number}: not a number in '{line.strip()}'") from None
        if not min_columns <= len(values) <= 10:
            raise ValueError(f"{file}:{number}: expected {min_columns} to 10 comma-separated values, got "
                             f"{len(values)} in '{line.strip()}'")
        if values[0] < 1 or values[0] != int(values[0]):
            raise ValueError(f"{file}:{number}: frame numbers are whole numbers from 1, got {parts[0]}")
        if values[4] < 0 or values[5] < 0:
            raise ValueError(f"{file}:{number}: negative box width or height in '{line.strip()}'")
        rows.append(values + [1.0, -1.0, -1.0, -1.0][len(values) - 6:])
    return np.array(rows, dtype=np.float64).reshape(-1, 10)


def read_seqinfo(folder: PathLike) -> dict[str, str]:
    """Return the ``[Sequence]`` section of ``folder/seqinfo.ini`` (keys lower-case), or {} when there is none."""
    file = Path(folder) / "seqinfo.ini"
    if not file.is_file():
        return {}
    parser = configparser.ConfigParser()
    try:
        parser.read_string(file.read_text(encoding="utf-8"))
    except configparser.Error as e:
        raise ValueError(f"{file}: not a valid seqinfo.ini ({e})") from None
    return {k.lower(): v for k, v in parser["Sequence"].items()} if parser.has_section("Sequence") else {}


def seqinfo_text(name: str, frames: int, width: int, height: int, frame_rate: float, image_dir: str = "img1",
                 image_ext: str = ".jpg") -> str:
    """Return the text of a MOTChallenge ``seqinfo.ini``."""
    return (f"[Sequence]\nname={name}\nimDir={image_dir}\nframeRate={frame_rate:g}\nseqLength={frames}\n"
            f"imWidth={width}\nimHeight={height}\nimExt={image_ext}\n")


@dataclass(frozen=True)
class MotSequence:
    """One MOTChallenge sequence folder.

    Attributes:
        name: the sequence name (``seqinfo.ini`` ``name``, else the folder name). folder: its path.
        frames: what to track: the image folder (``imDir``, default ``img1``) or, without one, the video in the folder.
        gt_file: ``gt/gt.txt`` (None when absent). frame_rate: frames/s (``frameRate``, default 30).
        length: ``seqLength`` (None when unknown).
    """

    name: str
    folder: Path
    frames: Path
    gt_file: Path | None
    frame_rate: float
    length: int | None


def _sequence_at(folder: Path) -> MotSequence:
    info = read_seqinfo(folder)
    image_dir = folder / info.get("imdir", "img1")
    if image_dir.is_dir():
        frames = image_dir
    else:
        videos = sorted(p for p in folder.iterdir() if p.suffix[1:].lower() in VID_FORMATS)
        if not videos:
            raise FileNotFoundError(f"{folder}: a MOTChallenge sequence needs its frames in {image_dir.name}/ "
                                    f"(seqinfo.ini imDir) or a video file in the folder; found neither")
        frames = videos[0]
    gt = folder / "gt" / "gt.txt"
    try:
        rate = float(info.get("framerate", 30)) or 30.0
        length = int(info["seqlength"]) if "seqlength" in info else None
    except ValueError as e:
        raise ValueError(f"{folder / 'seqinfo.ini'}: frameRate/seqLength must be numbers ({e})") from None
    return MotSequence(info.get("name", folder.name), folder, frames, gt if gt.is_file() else None, rate, length)


def find_sequences(path: PathLike) -> list[MotSequence]:
    """Return the MOTChallenge sequences at ``path``: the folder itself when it is one (``seqinfo.ini``, ``gt/`` or
    ``img1/`` inside), else each such subfolder, sorted by name.

    Raises:
        FileNotFoundError: ``path`` does not exist or holds no sequence.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"MOTChallenge folder not found: {path}")

    def is_sequence(folder: Path) -> bool:
        return any((folder / marker).exists() for marker in ("seqinfo.ini", "gt", "img1"))

    if is_sequence(path):
        return [_sequence_at(path)]
    sequences = [_sequence_at(p) for p in sorted(path.iterdir()) if p.is_dir() and is_sequence(p)]
    if not sequences:
        raise FileNotFoundError(f"{path}: no MOTChallenge sequence (a folder with seqinfo.ini, gt/gt.txt and img1/) "
                                f"in it or below it")
    return sequences
