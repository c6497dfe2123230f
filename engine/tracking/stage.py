"""The tracking stage: a prediction writer that runs first and attaches each frame's tracks for the writers after it.

Sequences: every video file, every camera/stream slot, and a folder (or list) of images are each one sequence with
its own tracker, ids from 1. Frame numbers follow MOTChallenge: a video frame's number in the file (``--vid-stride``
taken into account), an image's number from its file name when the name is a number (``img1/000042.jpg`` is frame
42, so a skipped unreadable frame does not shift the rest), otherwise its position in the sequence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.predict_writers import FrameResult
from utils.profiling import Profile
from utils.tracking.config import TrackerConfig
from utils.tracking.tracker import MultiObjectTracker

__all__ = ["FrameTracks", "TrackStage"]


@dataclass
class FrameTracks:
    """The tracks of one frame, as attached to ``FrameResult.tracks``.

    Attributes:
        sequence: name of the sequence (video/folder stem, or ``stream<i>``). frame: MOTChallenge frame number.
        tracks: (m, 8) ``[x1, y1, x2, y2, track_id, conf, cls, det_index]`` in the frame's pixels, ids ascending.
        trails: {track id: (k, 2) box centres of its last k frames, oldest first} for the tracks in this frame.
    """

    sequence: str
    frame: int
    tracks: np.ndarray
    trails: dict = field(default_factory=dict)


@dataclass
class _Sequence:
    key: str
    name: str
    tracker: MultiObjectTracker
    history: dict = field(default_factory=dict)
    count: int = 0


def _sequence_key(result: FrameResult) -> tuple[str, str]:
    """(identity, display name) of the sequence a frame belongs to."""
    if result.mode == "stream":
        return f"stream:{result.index}", f"stream{result.index}"
    path = Path(str(result.path))
    if result.mode == "video":
        return str(path), path.stem
    folder = path.parent
    return str(folder), folder.parent.name if folder.name == "img1" else folder.name


class TrackStage:
    """Run a tracker on every frame's detections and attach a :class:`FrameTracks` to ``result.tracks``.

    Args:
        config: the tracker settings (one tracker per sequence is built from them).
        vid_stride: the loader's video frame stride (frame numbers are counted in the original video).
        trail_length: centres remembered per track for drawing trails (0: none).
        frame_rate: frames/s for image folders and streams that report none (videos use their own rate).

    Attributes:
        times: :class:`Profile` of the tracker updates. sequences: names of the sequences seen, in order.
    """

    def __init__(self, config: TrackerConfig, vid_stride: int = 1, trail_length: int = 30, frame_rate: float = 30.0):
        self.config, self.vid_stride, self.trail_length = config, max(int(vid_stride), 1), max(int(trail_length), 0)
        self.frame_rate = frame_rate
        self.times = Profile()
        self.sequences: list[str] = []
        self._current: dict[int, _Sequence] = {}

    def _sequence(self, result: FrameResult) -> _Sequence:
        key, name = _sequence_key(result)
        current = self._current.get(result.index)
        if current is None or current.key != key:
            fps = result.vid_cap.get(cv2.CAP_PROP_FPS) if result.vid_cap is not None else self.frame_rate
            fps = fps if fps and np.isfinite(fps) and fps > 0 else self.frame_rate
            current = _Sequence(key, name, MultiObjectTracker(self.config, frame_rate=fps / self.vid_stride))
            self._current[result.index] = current
            self.sequences.append(name)
        return current

    def _frame_number(self, result: FrameResult, sequence: _Sequence) -> int:
        if result.mode == "video":
            return int(result.frame) * self.vid_stride
        stem = Path(str(result.path)).stem
        return int(stem) if result.mode == "image" and stem.isdigit() and int(stem) > 0 else sequence.count

    def write(self, result: FrameResult) -> None:
        """Update the frame's sequence tracker with ``result.det`` and set ``result.tracks``."""
        sequence = self._sequence(result)
        sequence.count += 1
        with self.times:
            tracks = sequence.tracker.update(result.det, result.im0)
        result.tracks = FrameTracks(sequence.name, self._frame_number(result, sequence), tracks,
                                    self._trails(sequence, tracks))

    def _trails(self, sequence: _Sequence, tracks: np.ndarray) -> dict:
        if not self.trail_length:
            return {}
        history = sequence.history
        centres = (tracks[:, :2] + tracks[:, 2:4]) / 2
        for track_id, centre in zip(tracks[:, 4].astype(int).tolist(), centres, strict=True):
            history.setdefault(track_id, deque(maxlen=self.trail_length)).append(centre)
        alive = set(tracks[:, 4].astype(int).tolist())
        for track_id in [t for t in history if t not in alive]:
            if len(history[track_id]) <= 1:
                del history[track_id]
            else:
                history[track_id].popleft()  # a lost track's trail fades away
        return {t: np.array(history[t]) for t in alive}

    def close(self) -> None:
        """Nothing to release."""
