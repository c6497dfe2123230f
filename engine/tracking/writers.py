"""What a tracking run leaves behind; each writer reads the :class:`~engine.tracking.stage.FrameTracks` that the
tracking stage attached to ``result.tracks``.

* :class:`MotWriter`: ``labels/<sequence>.txt`` in MOTChallenge format ``frame,id,x,y,w,h,conf,-1,-1,-1``,
* :class:`TrackCsvWriter`: ``tracks.csv`` (one row per tracked box) and ``track_summary.csv`` (one row per track),
* :class:`TrackCropWriter`: ``crops/<sequence>/<id>/<frame>.jpg``,
* :class:`TrackMediaWriter` / :class:`TrackViewer`: frames with a stable colour and id per track and its trail.

Text outputs are written to a hidden ``.partial`` file and renamed when complete, so an interrupted run never leaves
a truncated file under the final name.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from engine.predict_writers import BoxStyle, FrameResult, FrameViewer, MediaWriter
from utils.plotting.crops import save_one_box
from utils.plotting.tracks import draw_tracks
from utils.tracking.mot import format_mot_lines

__all__ = ["MotWriter", "TrackCropWriter", "TrackCsvWriter", "TrackMediaWriter", "TrackViewer"]

TRACK_CSV_COLUMNS = ("sequence", "frame", "track_id", "class", "name", "conf", "x1", "y1", "x2", "y2")
SUMMARY_COLUMNS = ("sequence", "track_id", "class", "name", "first_frame", "last_frame", "frames", "mean_conf")


class _PartialFile:
    """A text file written through ``.<name>.partial`` and renamed to its name on :meth:`finish`."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file: TextIO = open(self.tmp, "w", newline="", encoding="utf-8")

    def finish(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)


class MotWriter:
    """Write each sequence's tracks to ``labels/<sequence>.txt`` (MOTChallenge result format, frames from 1)."""

    def __init__(self, save_dir: Path):
        self.folder = Path(save_dir) / "labels"
        self.files: dict[str, _PartialFile] = {}

    def write(self, result: FrameResult) -> None:
        """Append the frame's tracks to its sequence's file."""
        ft = result.tracks
        out = self.files.get(ft.sequence)
        if out is None:
            out = self.files[ft.sequence] = _PartialFile(self.folder / f"{ft.sequence}.txt")
        out.file.writelines(f"{line}\n" for line in format_mot_lines(ft.frame, ft.tracks))

    def close(self) -> None:
        """Finish every sequence file."""
        for out in self.files.values():
            out.finish()
        self.files = {}


class TrackCsvWriter:
    """Write ``tracks.csv`` (one row per tracked box) and, at the end, ``track_summary.csv`` (one row per track)."""

    def __init__(self, save_dir: Path):
        self.save_dir = Path(save_dir)
        self.out: _PartialFile | None = None
        self.rows: Any = None
        self.summary: dict[tuple[str, int], list] = {}

    def write(self, result: FrameResult) -> None:
        """Append the frame's tracked boxes and update the per-track totals."""
        if self.out is None:
            self.out = _PartialFile(self.save_dir / "tracks.csv")
            self.rows = csv.writer(self.out.file)
            self.rows.writerow(TRACK_CSV_COLUMNS)
        ft = result.tracks
        for x1, y1, x2, y2, track_id, conf, cls, _ in ft.tracks.tolist():
            name = result.names.get(int(cls), str(int(cls))) if isinstance(result.names, dict) else str(int(cls))
            self.rows.writerow((ft.sequence, ft.frame, int(track_id), int(cls), name, f"{conf:.4f}",
                                f"{x1:.1f}", f"{y1:.1f}", f"{x2:.1f}", f"{y2:.1f}"))
            entry = self.summary.setdefault((ft.sequence, int(track_id)), [int(cls), name, ft.frame, ft.frame, 0, 0.0])
            entry[0], entry[1], entry[3] = int(cls), name, ft.frame
            entry[4] += 1
            entry[5] += conf

    def close(self) -> None:
        """Finish ``tracks.csv`` and write ``track_summary.csv``."""
        if self.out is None:
            return
        self.out.finish()
        self.out = None
        summary = _PartialFile(self.save_dir / "track_summary.csv")
        writer = csv.writer(summary.file)
        writer.writerow(SUMMARY_COLUMNS)
        for (sequence, track_id), (cls, name, first, last, frames, conf) in sorted(self.summary.items()):
            writer.writerow((sequence, track_id, cls, name, first, last, frames, f"{conf / frames:.4f}"))
        summary.finish()


class TrackCropWriter:
    """Save each tracked box as ``crops/<sequence>/<track id>/<frame>.jpg`` (one folder per track)."""

    def __init__(self, save_dir: Path):
        self.folder = Path(save_dir) / "crops"

    def write(self, result: FrameResult) -> None:
        """Save the crops of one frame."""
        ft = result.tracks
        for x1, y1, x2, y2, track_id in ft.tracks[:, :5].tolist():
            file = self.folder / ft.sequence / f"{int(track_id)}" / f"{ft.frame:06d}.jpg"
            save_one_box([x1, y1, x2, y2], result.im0, file=file, BGR=True)

    def close(self) -> None:
        """Nothing to release."""


def _render_tracks(result: FrameResult, style: BoxStyle) -> np.ndarray:
    """``im0`` with the frame's tracks and trails drawn (computed once per frame and style)."""
    key = ("tracks", style)
    if key not in result._annotated:
        ft = result.tracks
        result._annotated[key] = draw_tracks(result.im0, ft.tracks, result.names, ft.trails, style.line_thickness,
                                             labels=not style.hide_labels, hide_conf=style.hide_conf)
    return result._annotated[key]


class TrackMediaWriter(MediaWriter):
    """:class:`MediaWriter` that saves frames with the tracks drawn (id colours, ids, trails) instead of detections."""

    def render(self, result: FrameResult) -> np.ndarray:
        """Return ``im0`` with the tracks drawn."""
        return _render_tracks(result, self.style)


class TrackViewer(FrameViewer):
    """:class:`FrameViewer` that shows the tracks (id colours, ids, trails) instead of detections."""

    def render(self, result: FrameResult) -> np.ndarray:
        """Return ``im0`` with the tracks drawn."""
        return _render_tracks(result, self.style)
