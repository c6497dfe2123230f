"""Tracker YAMLs: ``--tracker bytetrack|botsort|ocsort`` or a path, read into a validated :class:`TrackerConfig`.

The keys are ultralytics' tracker YAML keys (``tracker_type``, ``track_high_thresh``, ``track_low_thresh``,
``new_track_thresh``, ``track_buffer``, ``match_thresh``, ``fuse_score``, ``gmc_method``, ``proximity_thresh``,
``appearance_thresh``, ``with_reid``, ``model``) plus ``min_hits``, ``gmc_downscale`` (BoT-SORT) and ``delta_t``,
``inertia`` (OC-SORT). An unknown key, a value of the wrong type or out of range stops with the file and key named.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Union

from utils.files import yaml_load

ROOT = Path(__file__).resolve().parents[2]
TRACKERS_DIR = ROOT / "data" / "trackers"
TRACKER_TYPES = ("bytetrack", "botsort", "ocsort")
GMC_METHODS = ("sparseOptFlow", "orb", "sift", "ecc", "none")
UNIT_KEYS = ("track_high_thresh", "track_low_thresh", "new_track_thresh", "match_thresh", "proximity_thresh",
             "appearance_thresh", "inertia")

__all__ = ["TRACKER_TYPES", "TrackerConfig", "load_tracker_config", "resolve_tracker_yaml"]


@dataclass(frozen=True)
class TrackerConfig:
    """The settings of one tracker (see ``data/trackers/*.yaml`` for each key's meaning).

    Thresholds are detection confidences or ``1 - IoU`` costs in [0, 1]; ``track_buffer`` is in frames at 30 FPS
    (the library scales it to the video's frame rate); ``min_hits`` in frames.
    """

    tracker_type: str = "bytetrack"
    track_high_thresh: float = 0.25
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.25
    track_buffer: int = 30
    match_thresh: float = 0.8
    min_hits: int = 2
    fuse_score: bool = True
    gmc_method: str = "sparseOptFlow"
    gmc_downscale: int = 2
    with_reid: bool = False
    proximity_thresh: float = 0.5
    appearance_thresh: float = 0.8
    model: str = "auto"
    delta_t: int = 3
    inertia: float = 0.2
    source: str = ""  # the YAML it was read from (for messages)

    def __post_init__(self) -> None:
        where = f"{self.source or 'tracker config'}"
        if self.tracker_type not in TRACKER_TYPES:
            raise ValueError(f"{where}: tracker_type '{self.tracker_type}' is not one of {', '.join(TRACKER_TYPES)}")
        for key in UNIT_KEYS:
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{where}: {key} = {getattr(self, key)} must be between 0 and 1")
        for key in ("track_buffer", "min_hits", "delta_t", "gmc_downscale"):
            if getattr(self, key) < (0 if key == "track_buffer" else 1):
                raise ValueError(f"{where}: {key} = {getattr(self, key)} is too small")
        if self.track_low_thresh > self.track_high_thresh:
            raise ValueError(f"{where}: track_low_thresh ({self.track_low_thresh}) is above track_high_thresh "
                             f"({self.track_high_thresh})")
        if self.gmc_method not in GMC_METHODS:
            raise ValueError(f"{where}: gmc_method '{self.gmc_method}' is not one of {', '.join(GMC_METHODS)}")
        if self.with_reid:
            raise ValueError(f"{where}: with_reid: True is not available: the trackers library's BoT-SORT has no "
                             f"appearance (ReID) branch, and this project downloads no ReID weights. Set with_reid: "
                             f"False (motion, IoU and camera-motion compensation are used).")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "") -> TrackerConfig:
        """Build from YAML values, checking key names and value types (ints accepted where floats are expected)."""
        known = {f.name: f for f in fields(cls) if f.name != "source"}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown tracker key(s) {', '.join(unknown)}; known keys: "
                             f"{', '.join(known)}")
        checked = {key: _checked(key, value, cls.__dataclass_fields__[key].default, source)
                   for key, value in values.items()}
        return cls(**checked, source=source)


def _checked(key: str, value: Any, default: Any, source: str) -> Any:
    """Return ``value`` converted to the type of ``default``, or raise ValueError naming ``source`` and ``key``."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{source}: {key} must be True or False, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{source}: {key} must be a whole number, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    return str(value)


def resolve_tracker_yaml(tracker: Union[str, Path]) -> Path:
    """Return the YAML for ``tracker``: a built-in name (``bytetrack``, ``botsort.yaml``) or a file path.

    Raises:
        FileNotFoundError: neither a built-in tracker nor an existing file (the built-in names are listed).
    """
    path = Path(tracker)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    if len(path.parts) == 1 and (TRACKERS_DIR / name).is_file():
        return TRACKERS_DIR / name
    builtin = ", ".join(sorted(p.stem for p in TRACKERS_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"--tracker {tracker}: no such tracker YAML; use one of {builtin} or a path to a YAML "
                            f"with the keys of {TRACKERS_DIR / 'bytetrack.yaml'}")


def load_tracker_config(tracker: Union[str, Path, TrackerConfig] = "bytetrack", **overrides: Any) -> TrackerConfig:
    """Read a tracker YAML (built-in name or path) into a :class:`TrackerConfig`; ``overrides`` replace its keys."""
    if isinstance(tracker, TrackerConfig):
        values = {f.name: getattr(tracker, f.name) for f in fields(tracker) if f.name != "source"}
        return TrackerConfig.from_dict({**values, **overrides}, source=tracker.source)
    path = resolve_tracker_yaml(tracker)
    values = yaml_load(path) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a tracker YAML must be a mapping of keys to values")
    return TrackerConfig.from_dict({**values, **overrides}, source=str(path))
