"""The built-in tracking sequence: MOTChallenge layout, deterministic, objects entering, leaving and occluding with
correct ground truth, atomic and versioned like the detection dataset."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from utils.data.track_sequence import (
    MARKER_FILE,
    SequenceSpec,
    ensure_track_sequence,
    generate_track_sequence,
    plan_objects,
    render_frame,
    scene_background,
)
from utils.tracking.mot import find_sequences, read_mot_file

SMALL = SequenceSpec(width=160, height=120, frames=40, seed=3, residents=3, passers=4, radius=(9.0, 16.0),
                     speed=(1.5, 2.5))


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    return generate_track_sequence(tmp_path_factory.mktemp("datasets") / "shapes-track", SMALL)


def test_layout_is_motchallenge(sequence):
    (found,) = find_sequences(sequence)
    assert found.name == "shapes-track" and found.frame_rate == 30 and found.length == 40
    assert found.frames == sequence / "img1" and found.gt_file == sequence / "gt" / "gt.txt"
    assert sorted(p.name for p in (sequence / "img1").iterdir())[:2] == ["000001.jpg", "000002.jpg"]
    assert len(list((sequence / "img1").iterdir())) == 40
    assert cv2.imread(str(sequence / "img1" / "000001.jpg")).shape == (120, 160, 3)
    cap = cv2.VideoCapture(str(sequence / "shapes-track.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 40 and cap.get(cv2.CAP_PROP_FPS) == 30
    cap.release()
    assert json.loads((sequence / MARKER_FILE).read_text())["dataset"] == "shapes-track"


def test_ground_truth_boxes_ids_and_visibility(sequence):
    gt = read_mot_file(sequence / "gt" / "gt.txt", min_columns=9)
    assert gt[:, 0].min() == 1 and gt[:, 0].max() == 40
    x1, y1, x2, y2 = gt[:, 2], gt[:, 3], gt[:, 2] + gt[:, 4], gt[:, 3] + gt[:, 5]
    assert x1.min() >= 0 and y1.min() >= 0 and x2.max() <= 160 and y2.max() <= 120  # clipped to the frame
    assert set(np.unique(gt[:, 7])) <= set(range(1, 9))  # shape class + 1
    assert ((gt[:, 8] >= 0) & (gt[:, 8] <= 1)).all()
    np.testing.assert_array_equal(gt[:, 6], (gt[:, 8] >= 0.25).astype(float))  # mostly hidden boxes are ignored
    pairs = gt[:, :2].astype(int)
    assert len(np.unique(pairs, axis=0)) == len(pairs)  # one box per id and frame
    spans = {int(i): (gt[gt[:, 1] == i, 0].min(), gt[gt[:, 1] == i, 0].max()) for i in np.unique(gt[:, 1])}
    assert sum(first == 1 and last == 40 for first, last in spans.values()) >= 3  # residents stay throughout
    assert any(first > 1 for first, _ in spans.values())  # an object enters later


def test_leaving_and_occlusion_happen_in_the_default_sequence():
    spec = SequenceSpec()
    objects = plan_objects(spec, scene_background(spec))
    assert len(objects) == 14 and sum(o.bounce for o in objects) == 5
    assert sum(1 < o.start and o.end < spec.frames for o in objects) >= 5  # enter and leave
    assert all(o.end <= spec.frames for o in objects)


def test_visibility_counts_the_pixels_a_nearer_object_hides():
    spec = SequenceSpec(width=120, height=80, frames=1, residents=2, passers=0)
    background = np.full((80, 120, 3), 128, np.uint8)
    far, near = plan_objects(spec, background)
    near = type(near)(**{**near.__dict__, "position": far.position.copy(), "velocity": far.velocity,
                         "depth": far.depth + 1, "radius": far.radius, "outline": far.outline, "spin": far.spin})
    _, rows = render_frame(background, [far, near], 1)
    by_id = {int(r[1]): r for r in rows}
    assert by_id[near.track_id][8] > 0.95 and by_id[far.track_id][8] < 0.05  # identical shapes: far one hidden
    assert by_id[far.track_id][6] == 0  # ... and ignored by the evaluation


def test_generation_is_deterministic(sequence, tmp_path):
    again = generate_track_sequence(tmp_path / "again", SMALL)
    assert (again / "gt" / "gt.txt").read_bytes() == (sequence / "gt" / "gt.txt").read_bytes()
    first = [cv2.imread(str(root / "img1" / "000020.jpg")) for root in (sequence, again)]
    np.testing.assert_array_equal(*first)


def test_ensure_reuses_regenerates_and_refuses_foreign_folders(tmp_path):
    root = tmp_path / "shapes-track"
    ensure_track_sequence(root, SMALL)
    stamp = (root / "gt" / "gt.txt").stat().st_mtime_ns
    assert ensure_track_sequence(root, SMALL) == root and (root / "gt" / "gt.txt").stat().st_mtime_ns == stamp
    shorter = SequenceSpec(**{**SMALL.__dict__, "frames": 10})
    ensure_track_sequence(root, shorter)  # outdated (other spec): replaced
    assert len(list((root / "img1").iterdir())) == 10
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not created by the built-in tracking sequence generator"):
        ensure_track_sequence(foreign, SMALL)
    assert (foreign / "notes.txt").read_text() == "user data"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left behind
