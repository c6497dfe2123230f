"""Hub ``model.track(frames)``: boxes carry a track id column, ids follow objects across frames and calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.autoshape import XYXY_COLUMNS, AutoShape, TrackedDetections
from models.backends import DetectMultiBackend
from tests.inference_support import calibrated_yolov5n, write_checkpoint

SIZE = 64


class MovingBoxes(AutoShape):
    """AutoShape whose model 'sees' two boxes moving right by 2 input pixels per call (exact, confident)."""

    calls = 0

    def _run_model(self, x: torch.Tensor, augment: bool):
        out = torch.zeros(x.shape[0], 2, 5 + 3)
        for b in range(x.shape[0]):
            shift = 2.0 * (self.calls + b)
            out[b, 0, :6] = torch.tensor([12 + shift, 20, 10, 10, 0.9, 0.9])  # xywh, obj, class 0
            out[b, 1, :5] = torch.tensor([40 - shift, 44, 12, 12, 0.8])
            out[b, 1, 6] = 0.9  # class 1
        self.calls += x.shape[0]
        return (out,)


@pytest.fixture
def moving(tmp_path):
    model = MovingBoxes(calibrated_yolov5n(), verbose=False)
    model.calls = 0
    return model


def frames(count: int) -> list[np.ndarray]:
    return [np.full((SIZE, SIZE, 3), 40 + i, np.uint8) for i in range(count)]


def test_boxes_carry_track_ids_that_follow_the_objects(moving):
    results = moving.track(frames(20), size=SIZE)  # two inference batches (16 + 4)
    assert isinstance(results, TrackedDetections) and results.n == 20
    assert len(results.pred[0]) == 0  # min_hits 2: confirmed from the second frame
    for i in range(1, 20):
        rows = results.xyxy[i]
        assert rows.shape == (2, 7)
        by_class = {int(c): int(t) for c, t in zip(rows[:, 5], rows[:, 6], strict=True)}
        assert by_class == {0: 1, 1: 2}
        assert results.ids[i].tolist() == rows[:, 6].tolist()
        assert results.xywhn[i].shape == (2, 7) and float(results.xywhn[i][:, :4].max()) <= 1.0
    x_centres = [float(results.xywh[i][results.xyxy[i][:, 5] == 0, 0]) for i in range(1, 20)]
    assert np.all(np.diff(x_centres) > 0)  # class-0 box moves right, same id throughout


def test_persist_continues_tracks_across_calls(moving):
    moving.track(frames(3), size=SIZE)
    again = moving.track(frames(3), size=SIZE, persist=True)
    assert again.ids[0].tolist() == [1.0, 2.0]  # known tracks: ids from the first frame of the new call
    fresh = moving.track(frames(3), size=SIZE)
    assert len(fresh.ids[0]) == 0 and fresh.ids[1].tolist() == [1.0, 2.0]


def test_pandas_render_crop_and_tolist(moving, tmp_path):
    results = moving.track(frames(4), tracker="ocsort", size=SIZE)
    frame = results.pandas().xyxy[2]
    assert list(frame.columns) == [*XYXY_COLUMNS, "id"] and sorted(frame["id"]) == [1, 2]
    rendered = results.render()
    assert rendered[2].shape == (SIZE, SIZE, 3) and not np.array_equal(rendered[2], frames(4)[2])
    crops = results.crop(save=True, save_dir=tmp_path / "exp")
    assert {c["id"] for c in crops} == {1, 2} and (tmp_path / "exp" / "crops" / "1").is_dir()
    single = results.tolist()[3]
    assert isinstance(single, TrackedDetections) and single.xyxy[0].shape == (2, 7)


def test_track_works_on_a_hub_model_from_a_checkpoint(tmp_path):
    model = AutoShape(DetectMultiBackend(write_checkpoint(tmp_path / "tiny.pt", calibrated_yolov5n())), verbose=False)
    model.conf = 0.2
    results = model.track(frames(3), tracker="botsort", size=SIZE)
    assert results.n == 3 and all(p.shape[1] == 7 for p in results.pred)
    assert "image 1/3" in str(results)
