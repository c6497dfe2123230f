"""The tracker adapter on hand-made detections: stable ids through an occlusion and a crossing, re-entry within the
buffer, tracker YAML checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from utils.tracking.config import TrackerConfig, load_tracker_config, resolve_tracker_yaml
from utils.tracking.tracker import MultiObjectTracker

TRACKERS = ("bytetrack", "botsort", "ocsort")
FRAME = np.full((240, 400, 3), 90, dtype=np.uint8)


def box(cx: float, cy: float, size: float = 40.0, conf: float = 0.9) -> list[float]:
    half = size / 2
    return [cx - half, cy - half, cx + half, cy + half, conf, 0.0]


def occlusion_and_crossing(frame: int) -> dict[str, list[float]]:
    """Three objects: A and B cross (their boxes overlap for ~10 frames), C is hidden for frames 20-27."""
    objects = {"A": box(40 + 5 * frame, 100), "B": box(340 - 5 * frame, 118), "C": box(200, 40 + 2 * frame)}
    if 20 <= frame <= 27:
        del objects["C"]
    return objects


def run_scenario(tracker: MultiObjectTracker, frames: int, scene) -> dict[str, list[int]]:
    """Feed the scene's detections; return the ids given to each object over the frames (where it had one)."""
    seen: dict[str, list[int]] = {}
    for frame in range(frames):
        objects = scene(frame)
        names = list(objects)
        det = np.array([objects[n] for n in names], dtype=np.float32).reshape(-1, 6)
        tracks = tracker.update(det, FRAME)
        for row in tracks:
            seen.setdefault(names[int(row[7])], []).append(int(row[4]))
    return seen


@pytest.mark.parametrize("name", TRACKERS)
def test_ids_stay_stable_through_an_occlusion_and_a_crossing(name):
    seen = run_scenario(MultiObjectTracker(name), 60, occlusion_and_crossing)
    assert set(seen) == {"A", "B", "C"}
    ids = {obj: set(values) for obj, values in seen.items()}
    assert all(len(v) == 1 for v in ids.values()), ids  # one id per object for the whole sequence
    assert len(set.union(*ids.values())) == 3  # and three different ids
    assert len(seen["A"]) >= 57 and len(seen["C"]) >= 48  # tracked in (nearly) every frame it was detected


def leaving(gap: int):
    """One object moving right; its detections vanish for ``gap`` frames from frame 10, then continue on its path."""
    def scene(frame: int) -> dict[str, list[float]]:
        return {} if 10 <= frame < 10 + gap else {"A": box(30 + 3 * frame, 120)}
    return scene


@pytest.mark.parametrize("name", TRACKERS)
def test_reentry_within_the_buffer_keeps_the_id_and_after_it_gets_a_new_one(name):
    within = run_scenario(MultiObjectTracker(name), 10 + 12 + 10, leaving(12))["A"]
    assert set(within) == {1} and len(within) >= 18  # OC-SORT re-confirms the returning track over one frame
    after = run_scenario(MultiObjectTracker(load_tracker_config(name, track_buffer=5)), 10 + 12 + 10, leaving(12))["A"]
    assert set(after) == {1, 2}  # the lost track was dropped after 5 frames: the object came back as a new track


def test_buffer_scales_with_the_frame_rate():
    # track_buffer is given at 30 FPS: at 10 FPS, 12 missing frames are 1.2 s, beyond the 1 s buffer
    after = run_scenario(MultiObjectTracker("bytetrack", frame_rate=10), 32, leaving(12))["A"]
    assert set(after) == {1, 2}


def test_output_rows_ids_from_one_low_scores_and_reset():
    tracker = MultiObjectTracker("bytetrack")
    det = np.array([box(100, 100), box(250, 100), box(100, 200, conf=0.05)], dtype=np.float32)
    assert tracker.update(det).shape == (0, 8)  # min_hits 2: no id on the first frame
    tracks = tracker.update(det)
    assert tracks[:, 4].tolist() == [1.0, 2.0] and tracks[:, 7].tolist() == [0.0, 1.0]  # below track_low: dropped
    np.testing.assert_allclose(tracks[:, :4], det[:2, :4])
    np.testing.assert_allclose(tracks[:, 5:7], det[:2, 4:6])
    tracker.reset()
    tracker.update(det)
    assert tracker.update(det)[:, 4].tolist() == [1.0, 2.0] and tracker.frames == 2


def test_tracker_yamls_load_and_map_ultralytics_keys():
    for name in TRACKERS:
        config = load_tracker_config(name)
        assert config.tracker_type == name and Path(config.source) == resolve_tracker_yaml(f"{name}.yaml")
    assert load_tracker_config("botsort").gmc_method == "sparseOptFlow"
    assert load_tracker_config("bytetrack", match_thresh=0.6).match_thresh == 0.6


@pytest.mark.parametrize(("text", "message"), [
    ("tracker_type: bytetrack\ntrack_bufer: 30\n", "unknown tracker key(s) track_bufer"),
    ("tracker_type: deepsort\n", "tracker_type 'deepsort' is not one of"),
    ("tracker_type: bytetrack\nmatch_thresh: 1.5\n", "match_thresh = 1.5 must be between 0 and 1"),
    ("tracker_type: bytetrack\ntrack_buffer: 2.5\n", "track_buffer must be a whole number"),
    ("tracker_type: botsort\nwith_reid: True\n", "with_reid: True is not available"),
    ("tracker_type: botsort\ngmc_method: magic\n", "gmc_method 'magic' is not one of"),
    ("tracker_type: bytetrack\ntrack_low_thresh: 0.7\n", "track_low_thresh (0.7) is above track_high_thresh"),
])
def test_bad_tracker_yaml_names_file_and_key(tmp_path, text, message):
    file = tmp_path / "custom.yaml"
    file.write_text(text)
    with pytest.raises(ValueError, match="custom.yaml") as error:
        load_tracker_config(file)
    assert message in str(error.value)


def test_unknown_tracker_name_lists_the_builtin_ones():
    with pytest.raises(FileNotFoundError, match="botsort, bytetrack, ocsort"):
        load_tracker_config("strongsort")


def test_botsort_without_camera_motion_compensation_needs_no_frames():
    tracker = MultiObjectTracker(TrackerConfig(tracker_type="botsort", gmc_method="none"))
    assert not tracker.uses_frames
    det = np.array([box(100, 100)], dtype=np.float32)
    tracker.update(det)
    assert tracker.update(det)[:, 4].tolist() == [1.0]
