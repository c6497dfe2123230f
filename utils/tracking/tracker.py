"""A thin adapter over the ``trackers`` library (Roboflow, Apache-2.0): ByteTrack, BoT-SORT and OC-SORT.

The library does the Kalman filtering, the assignment and the track life cycle; this module maps a
:class:`~utils.tracking.config.TrackerConfig` onto its constructor arguments and converts detections in and tracks
out as plain arrays:

* in: (n, 6) ``[x1, y1, x2, y2, conf, cls]`` in frame pixels (the ``det`` of a prediction),
* out: (m, 8) ``[x1, y1, x2, y2, track_id, conf, cls, det_index]``, one row per detection that belongs to a
  confirmed track, sorted by id. Ids start at 1 (MOTChallenge); boxes are the detection boxes themselves.

Tracking is class-agnostic (as in ultralytics): a track keeps the class of its latest detection.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from utils.tracking.config import TrackerConfig, load_tracker_config

__all__ = ["TRACK_COLUMNS", "MultiObjectTracker", "empty_tracks"]

TRACK_COLUMNS = ("x1", "y1", "x2", "y2", "track_id", "conf", "cls", "det_index")


def empty_tracks() -> np.ndarray:
    """Return an empty (0, 8) float32 track array."""
    return np.zeros((0, len(TRACK_COLUMNS)), dtype=np.float32)


def _library() -> Any:
    """Import the trackers library, or raise ImportError saying how to install it."""
    try:
        import supervision
        import trackers
    except ImportError as e:
        raise ImportError(f"Tracking needs the 'trackers' package ({e}); install the project's requirements: "
                          f"pip install -r requirements.txt") from None
    return trackers, supervision


def _build(config: TrackerConfig, frame_rate: float) -> Any:
    """Return the library tracker for ``config`` at ``frame_rate`` frames/s."""
    trackers, _ = _library()
    common = dict(lost_track_buffer=config.track_buffer, frame_rate=frame_rate,
                  minimum_consecutive_frames=config.min_hits, high_conf_det_threshold=config.track_high_thresh)
    min_iou = 1.0 - config.match_thresh
    if config.tracker_type == "bytetrack":
        return trackers.ByteTrackTracker(**common, track_activation_threshold=config.new_track_thresh,
                                         minimum_iou_threshold=min_iou)
    if config.tracker_type == "botsort":
        cmc = config.gmc_method != "none"
        return trackers.BoTSORTTracker(**common, track_activation_threshold=config.new_track_thresh,
                                       minimum_iou_threshold_first_assoc=min_iou, enable_cmc=cmc,
                                       cmc_method=config.gmc_method if cmc else "sparseOptFlow",
                                       cmc_downscale=config.gmc_downscale)
    return trackers.OCSORTTracker(**common, minimum_iou_threshold=min_iou, delta_t=config.delta_t,
                                  direction_consistency_weight=config.inertia)


class MultiObjectTracker:
    """Track detections frame by frame with one of the library's trackers.

    Args:
        config: a :class:`TrackerConfig`, a built-in tracker name (``'bytetrack'``) or a YAML path.
        frame_rate: frames per second of the source (scales ``track_buffer``, which is given at 30 FPS).

    Attributes:
        frames: number of :meth:`update` calls since the last reset.
    """

    def __init__(self, config: TrackerConfig | str = "bytetrack", frame_rate: float = 30.0):
        self.config = config if isinstance(config, TrackerConfig) else load_tracker_config(config)
        self.frame_rate = float(frame_rate) if frame_rate and np.isfinite(frame_rate) and frame_rate > 0 else 30.0
        self.uses_frames = self.config.tracker_type == "botsort" and self.config.gmc_method != "none"
        self._tracker = _build(self.config, self.frame_rate)
        self.frames = 0

    def reset(self) -> None:
        """Forget every track and restart ids at 1 (a new video or scene)."""
        self._tracker = _build(self.config, self.frame_rate)
        self.frames = 0

    def update(self, det: Any, frame: np.ndarray | None = None) -> np.ndarray:
        """Advance one frame and return its tracks.

        Args:
            det: (n, 6) ``[x1, y1, x2, y2, conf, cls]`` (numpy or torch) in the frame's pixels.
            frame: the frame, HWC BGR uint8; used by BoT-SORT's camera-motion compensation, ignored otherwise.

        Returns:
            (m, 8) float32 ``[x1, y1, x2, y2, track_id, conf, cls, det_index]`` sorted by ``track_id``, where
            ``det_index`` is the row of ``det`` the box came from.
        """
        _, sv = _library()
        det = np.asarray(det.cpu() if hasattr(det, "cpu") else det, dtype=np.float32).reshape(-1, 6)
        index = np.flatnonzero(det[:, 4] >= self.config.track_low_thresh)
        kept = det[index]
        detections = sv.Detections(xyxy=kept[:, :4].astype(np.float64), confidence=kept[:, 4].astype(np.float64),
                                   class_id=kept[:, 5].astype(int), data={"det_index": index})
        self.frames += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the library warns about frames it does not need and empty frames
            out = self._tracker.update(detections, frame if self.uses_frames else None)
        ids = np.asarray(out.tracker_id if out.tracker_id is not None else [], dtype=np.int64)
        confirmed = ids >= 0
        if not confirmed.any():
            return empty_tracks()
        tracks = np.column_stack([out.xyxy[confirmed], ids[confirmed] + 1, out.confidence[confirmed],
                                  out.class_id[confirmed], out.data["det_index"][confirmed]]).astype(np.float32)
        return tracks[np.argsort(tracks[:, 4], kind="stable")]
