"""track.py end to end (calibrated random yolov5n, CPU): outputs, MOT text, CSV, crops, --eval, exported models, and
clear errors for bad sources."""

from __future__ import annotations

import csv
import inspect
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import export
import track
from models.yolo import Model
from tests.inference_support import calibrated_yolov5n, write_checkpoint, write_video
from utils.data.track_sequence import SequenceSpec, generate_track_sequence
from utils.tracking.mot import read_mot_file

COMMON = dict(imgsz=64, conf_thres=0.2, max_det=10, device="cpu")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt", calibrated_yolov5n())


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "walk.mp4", frames=8)


@pytest.fixture(scope="module")
def mot_sequence(tmp_path_factory) -> Path:
    spec = SequenceSpec(width=128, height=96, frames=12, seed=5, residents=2, passers=1, radius=(10.0, 18.0))
    return generate_track_sequence(tmp_path_factory.mktemp("mot") / "tiny-seq", spec)


def test_video_outputs_mot_csv_crops_and_annotated_video(checkpoint, video, tmp_path):
    save_dir = track.run(weights=checkpoint, source=video, project=tmp_path, name="exp", save_txt=True,
                         save_csv=True, save_crop=True, **COMMON)
    assert save_dir == tmp_path / "exp"
    cap = cv2.VideoCapture(str(save_dir / "walk.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    cap.release()
    mot = read_mot_file(save_dir / "labels" / "walk.txt")
    assert len(mot) and mot[:, 0].min() >= 2 and mot[:, 0].max() <= 8  # min_hits 2: ids from frame 2
    assert (mot[:, 1] >= 1).all() and (mot[:, 7:] == -1).all()
    for line in (save_dir / "labels" / "walk.txt").read_text().splitlines():
        assert len(line.split(",")) == 10
    with open(save_dir / "tracks.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(mot) and {r["sequence"] for r in rows} == {"walk"}
    np.testing.assert_array_equal(sorted(int(r["track_id"]) for r in rows), sorted(mot[:, 1].astype(int)))
    with open(save_dir / "track_summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert sum(int(r["frames"]) for r in summary) == len(rows)
    crop_ids = {p.name for p in (save_dir / "crops" / "walk").iterdir()}
    assert crop_ids == {str(i) for i in np.unique(mot[:, 1]).astype(int)}
    assert not list(save_dir.rglob(".*partial*"))


def test_image_folder_is_one_sequence_numbered_by_file_name(checkpoint, mot_sequence, tmp_path):
    save_dir = track.run(weights=checkpoint, source=mot_sequence / "img1", project=tmp_path, save_txt=True,
                         trail_length=0, **COMMON)
    assert sorted(p.name for p in (save_dir / "labels").iterdir()) == ["tiny-seq.txt"]
    assert (save_dir / "tiny-seq.mp4").is_file() and not list(save_dir.glob("*.jpg"))


def test_eval_on_a_motchallenge_folder_writes_metrics(checkpoint, mot_sequence, tmp_path):
    save_dir, combined, rows = track.run(weights=checkpoint, source=mot_sequence, project=tmp_path, eval=True,
                                         nosave=True, **COMMON)
    assert [name for name, _ in rows] == ["tiny-seq"] and combined == rows[0][1]
    assert combined.frames == 12 and combined.gt_tracks == 3 and combined.TP + combined.FN > 0
    with open(save_dir / "metrics.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["sequence"] == "tiny-seq" and float(row["MOTA"]) == pytest.approx(combined.MOTA, abs=1e-5)
    assert (save_dir / "labels" / "tiny-seq.txt").is_file()


def test_eval_without_ground_truth_is_a_clear_error(checkpoint, tmp_path):
    folder = tmp_path / "seq" / "img1"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "000001.jpg"), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="needs ground truth in gt/gt.txt"):
        track.run(weights=checkpoint, source=tmp_path / "seq", project=tmp_path / "runs", eval=True, **COMMON)


def test_corrupt_and_missing_videos_fail_clearly_and_fast(checkpoint, tmp_path):
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="No frames could be read from .*broken.mp4"):
        track.run(weights=checkpoint, source=corrupt, project=tmp_path / "runs", **COMMON)
    with pytest.raises(FileNotFoundError, match="Source not found"):
        track.run(weights=checkpoint, source=tmp_path / "missing.mp4", project=tmp_path / "runs", **COMMON)
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_camera_that_does_not_exist_fails_fast(checkpoint, tmp_path):
    start = time.perf_counter()
    with pytest.raises((ConnectionError, TimeoutError), match="camera 9"):
        track.run(weights=checkpoint, source="9", project=tmp_path, **COMMON)
    assert time.perf_counter() - start < 15
    assert not list(tmp_path.iterdir())


def test_unknown_tracker_fails_before_the_run_folder(checkpoint, video, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such tracker YAML"):
        track.run(weights=checkpoint, source=video, project=tmp_path, tracker="sort9", **COMMON)
    assert not list(tmp_path.iterdir())


def test_parse_opt_has_detect_flags_and_tracking_defaults():
    opt = track.parse_opt(["--weights", "a.pt", "--img", "320", "--tracker", "ocsort", "--eval", "--save-txt"])
    assert opt.imgsz == [320, 320] and opt.tracker == "ocsort" and opt.eval and opt.save_txt
    assert opt.source is None and opt.conf_thres == 0.1 and Path(opt.project).name == "track"
    assert opt.trail_length == 30 and opt.vid_stride == 1 and opt.iou_thres == 0.45
    assert set(vars(opt)) == set(inspect.signature(track.run).parameters)


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export")
    weights = folder / "tiny.pt"
    weights.write_bytes(checkpoint.read_bytes())
    files = export.run(weights=weights, imgsz=(64, 64), include=("torchscript", "onnx"))
    return {Path(f).suffix: Path(f) for f in files}


def mot_rows(save_dir: Path, stem: str) -> np.ndarray:
    file = save_dir / "labels" / f"{stem}.txt"
    return read_mot_file(file) if file.is_file() else np.zeros((0, 10))


@pytest.mark.parametrize("suffix", [".onnx", ".torchscript"])
def test_exported_models_track_like_the_pt_file(checkpoint, exported, video, tmp_path, suffix):
    kwargs = dict(source=video, project=tmp_path, save_txt=True, nosave=True, **COMMON)
    reference = mot_rows(track.run(weights=checkpoint, name="pt", **{**kwargs, "imgsz": (64, 64)}), "walk")
    rows = mot_rows(track.run(weights=exported[suffix], name="exp", **kwargs), "walk")
    assert len(reference) > 0 and rows.shape == reference.shape  # exports run at the fixed 64x64 input
    np.testing.assert_allclose(rows[:, :6], reference[:, :6], atol=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", ["extensions/cfg/yolov3-tiny-legacy.yaml", "extensions/cfg/convnext_yolov5n.yaml"])
def test_legacy_heads_and_convnext_checkpoints_track(cfg, video, tmp_path):
    model = Model(cfg, nc=3).eval()
    model.names = {0: "a", 1: "b", 2: "c"}
    weights = write_checkpoint(tmp_path / "model.pt", model)
    save_dir = track.run(weights=weights, source=video, project=tmp_path, save_txt=True,
                         **{**COMMON, "conf_thres": 0.0001})
    assert (save_dir / "walk.mp4").is_file() and (save_dir / "labels").is_dir()


def test_a_folder_of_unrelated_images_keeps_odd_sized_ones_as_images(checkpoint, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name, shape in (("a.jpg", (48, 64, 3)), ("b.jpg", (48, 64, 3)), ("c.jpg", (80, 40, 3))):
        cv2.imwrite(str(folder / name), np.full(shape, 100, np.uint8))
    save_dir = track.run(weights=checkpoint, source=folder, project=tmp_path / "runs", **COMMON)
    cap = cv2.VideoCapture(str(save_dir / "mixed.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2 and (save_dir / "c.jpg").is_file()
    cap.release()
