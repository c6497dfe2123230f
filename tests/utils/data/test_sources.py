"""Inference sources: files, folders, globs, .txt lists, videos, cameras/streams (fast, clear failures)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.inference_support import draw_scene, write_video
from utils.data.sources import (
    LoadImages,
    LoadScreenshots,
    LoadStreams,
    SourceKind,
    classify_source,
    collect_source_files,
    is_stream_source,
    open_capture,
    open_source,
)


@pytest.fixture()
def folder(tmp_path) -> Path:
    cv2.imwrite(str(tmp_path / "b.jpg"), draw_scene(40, 60))
    cv2.imwrite(str(tmp_path / "a.png"), draw_scene(50, 30))
    (tmp_path / "notes.md").write_text("not an image")
    write_video(tmp_path / "c.mp4", frames=5, height=32, width=48)
    return tmp_path


def test_folder_images_then_video_frames(folder):
    loader = LoadImages(folder, img_size=64, stride=32, auto=True)
    items = list(loader)
    assert len(loader) == 3 and [Path(p).name for p, *_ in items] == ["a.png", "b.jpg"] + ["c.mp4"] * 5
    path, im, im0, cap, s = items[0]
    assert im0.shape == (50, 30, 3) and im.shape == (3, 64, 64)
    assert im.flags.c_contiguous and s == f"image 1/3 {path}: " and cap is None
    np.testing.assert_array_equal(im0, cv2.imread(str(folder / "a.png")))
    assert items[2][3] is not None and items[-1][4].startswith("video 3/3 (5/5) ")
    assert loader.mode == "video" and loader.frame == 5


def test_letterbox_and_channel_order(folder):
    path, im, im0, _, _ = next(iter(LoadImages(folder / "b.jpg", img_size=64, stride=32, auto=False)))
    assert im.shape == (3, 64, 64)
    top = (64 - round(40 * 64 / 60)) // 2
    np.testing.assert_array_equal(im[:, :top], 114)  # grey padding
    centre = cv2.resize(im0, (64, round(40 * 64 / 60)), interpolation=cv2.INTER_LINEAR)[20, 5]
    np.testing.assert_allclose(im[:, top + 20, 5], centre[::-1], atol=2)  # CHW RGB of the BGR original


def test_vid_stride_glob_and_txt_list(folder, tmp_path):
    frames = [s for *_, s in LoadImages(folder / "c.mp4", img_size=32, vid_stride=2)]
    assert len(frames) == 2 and frames[-1].startswith("video 1/1 (2/2)")
    assert [Path(p).name for p in collect_source_files(str(folder / "*.jpg"))] == ["b.jpg"]
    listing = tmp_path / "list.txt"
    listing.write_text("b.jpg\n" + str(folder / "a.png") + "\n")  # relative entries resolve next to the list
    assert [Path(p).name for p in collect_source_files(listing)] == ["a.png", "b.jpg"]


def test_missing_corrupt_and_url_sources(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        LoadImages(tmp_path / "nowhere.jpg")
    with pytest.raises(FileNotFoundError, match="No images or videos found"):
        LoadImages(folder / "notes.md")
    with pytest.raises(ValueError, match="not allowed"):
        LoadImages("https://example.com/x.jpg")
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8 broken")
    names = [Path(p).name for p, *_ in LoadImages(folder, img_size=32)]
    assert "zz_broken.jpg" not in names and "a.png" in names  # skipped with a warning in a multi-file source
    with pytest.raises(ValueError, match="zz_broken.jpg"):
        next(iter(LoadImages(folder / "zz_broken.jpg")))


def test_stream_detection():
    assert is_stream_source("0") and is_stream_source("rtsp://host/live") and is_stream_source("list.streams")
    assert not is_stream_source("video.mp4") and not is_stream_source("https://host/a.jpg")


def test_missing_camera_and_unreachable_stream_fail_fast():
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match="camera 97"):
        LoadStreams("97", timeout=2)
    with pytest.raises((ConnectionError, TimeoutError), match="rtsp://127.0.0.1:9/none"):
        open_capture("rtsp://127.0.0.1:9/none", timeout=2)
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ValueError, match="YouTube"):
        LoadStreams("https://youtube.com/watch?v=x")


def test_video_file_read_as_a_stream(tmp_path):
    video = write_video(tmp_path / "s.mp4", frames=4, height=32, width=48)
    streams = LoadStreams(str(video), img_size=64, stride=32, timeout=5)
    try:
        sources, im, im0s, cap, s = next(iter(streams))
        assert sources == [str(video)] and im.shape == (1, 3, 64, 64) and im0s[0].shape == (32, 48, 3)
        assert len(streams) == 1 and streams.frames == [4] and streams.fps == [10.0]
        batches = 1 + sum(1 for _ in streams)  # ends once the reader thread has consumed the file
        assert batches >= 1
    finally:
        streams.close()


def test_screenshots_need_mss():
    try:
        import mss  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="mss"):
            LoadScreenshots("screen 0")
    else:
        pytest.skip("mss is installed; the clear-error path is not reachable")


def test_classify_and_open_source(folder):
    assert classify_source(str(folder / "a.png")) == SourceKind(True, False, False, False, False)
    assert classify_source("0").webcam and classify_source("rtsp://host/live").is_url
    assert classify_source("screen 0 10 10 64 64").screenshot and classify_source("list.txt").list_file
    with pytest.raises(ValueError, match="not allowed"):
        classify_source("https://host/a.jpg")
    loader = open_source([folder / "b.jpg", folder / "a.png"], img_size=64)
    assert isinstance(loader, LoadImages) and [Path(p).name for p in loader.files] == ["a.png", "b.jpg"]
    assert isinstance(open_source(str(folder), img_size=64, vid_stride=2), LoadImages)
    with pytest.raises(ConnectionError, match="camera 97"):
        open_source("97")
