"""Tracker libraries compared on identical detections of the built-in sequence: accuracy and tracker time.

The detector runs once over the built-in 640x480 sequence (``--weights``, ``--img``, conf 0.1); every tracker then
gets exactly the same per-frame detections (and frames, for camera-motion compensation), so only the tracker
differs. Printed per tracker: milliseconds per frame of ``update`` (median of ``--rounds``), MOTA, IDF1, HOTA and ID
switches against the ground truth.

* ``trackers`` (Roboflow, Apache-2.0; what this project uses, through ``utils.tracking.MultiObjectTracker`` with
  the ``data/trackers/*.yaml`` settings),
* ``boxmot`` (AGPL-3.0) when importable, e.g. ``pip install --no-deps --target /tmp/bmt boxmot==25.0.0
  filterpy==1.4.5 lapx==0.11.1`` then ``PYTHONPATH=/tmp/bmt python benchmarks/bench_tracker_libraries.py ...``
  (its own requirements would replace opencv-python-headless 5 with opencv-python 4 and pandas 3 with 2).
  BoT-SORT runs without appearance embeddings (ReID weights would be downloaded).

``--oracle`` replaces the detections by the ground truth (boxes at least 30% visible, 2 px jitter, random scores
0.5-1, 5% dropped): the trackers' own share of the errors, whatever the detector.

Usage: ``python benchmarks/bench_tracker_libraries.py --weights best.pt [--img 320] [--rounds 3] [--oracle]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
import torch

from engine.predictor import Predictor
from engine.tracking.run import TrackOptions, builtin_sequence
from models.backends import DetectMultiBackend
from utils.data.track_sequence import SEQUENCE_NAME
from utils.logging import LOGGER
from utils.tracking.metrics import evaluate_mot
from utils.tracking.mot import read_mot_file
from utils.tracking.tracker import MultiObjectTracker


def detections(weights: str, img: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-frame (n, 6) detections and BGR frames of the built-in sequence's video."""
    predictor = Predictor(DetectMultiBackend(weights), TrackOptions(imgsz=img, conf_thres=0.1))
    dets, frames = [], []
    for result in predictor.stream(str(builtin_sequence() / f"{SEQUENCE_NAME}.mp4")):
        dets.append(result.det.cpu().numpy().copy())
        frames.append(result.im0)
    return dets, frames


def oracle_detections(gt: np.ndarray, frames: int, seed: int = 0) -> list[np.ndarray]:
    """Ground-truth boxes at least 30% visible as detections: 2 px jitter, conf 0.5-1, 5% dropped, class 0."""
    rng = np.random.default_rng(seed)
    dets = []
    for frame in range(1, frames + 1):
        rows = gt[(gt[:, 0] == frame) & (gt[:, 8] >= 0.3)]
        rows = rows[rng.random(len(rows)) >= 0.05]
        xyxy = np.column_stack([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]]) + rng.normal(0, 2, (len(rows), 4))
        dets.append(np.column_stack([xyxy, rng.uniform(0.5, 1.0, len(rows)), np.zeros(len(rows))]))
    return dets


def ours(name: str) -> Callable[[], Callable]:
    def make() -> Callable:
        tracker = MultiObjectTracker(name)
        return lambda det, frame: tracker.update(det, frame)[:, :7]
    return make


def boxmot_trackers() -> dict[str, Callable[[], Callable]]:
    try:
        import boxmot
    except ImportError:
        return {}

    def wrap(factory: Callable[[], Any]) -> Callable[[], Callable]:
        def make() -> Callable:
            tracker = factory()

            def update(det: np.ndarray, frame: np.ndarray) -> np.ndarray:
                out = np.asarray(tracker.update(det, frame)).reshape(-1, 8)
                return out[:, :7]
            return update
        return make

    return {"boxmot bytetrack": wrap(lambda: boxmot.ByteTrack()),
            "boxmot botsort": wrap(lambda: boxmot.BotSort(use_embeddings=False, cmc_method="sof")),
            "boxmot ocsort": wrap(lambda: boxmot.OcSort())}


def run(make: Callable[[], Callable], dets: list[np.ndarray], frames: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """Return (ms per frame of update, MOT rows (n, 7))."""
    update, rows, spent = make(), [], 0.0
    for index, (det, frame) in enumerate(zip(dets, frames, strict=True), 1):
        start = time.perf_counter()
        tracks = update(det, frame)
        spent += time.perf_counter() - start
        for x1, y1, x2, y2, track_id, conf, _ in np.asarray(tracks, dtype=np.float64).tolist():
            rows.append([index, track_id, x1, y1, x2 - x1, y2 - y1, conf])
    return spent / len(dets) * 1e3, np.array(rows).reshape(-1, 7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--img", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--oracle", action="store_true",
                        help="track jittered ground-truth boxes instead of the detector's (the trackers alone)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    LOGGER.setLevel(logging.WARNING)
    dets, frames = detections(args.weights, args.img)
    gt = read_mot_file(builtin_sequence() / "gt" / "gt.txt", min_columns=9)
    if args.oracle:
        dets = oracle_detections(gt, len(dets))
    candidates = {f"trackers {n}": ours(n) for n in ("bytetrack", "botsort", "ocsort")} | boxmot_trackers()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    rows: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, make in candidates.items():
            ms, rows[name] = run(make, dets, frames)
            times[name].append(ms)
    source = "jittered ground truth" if args.oracle else f"{args.img} px detections at conf >= 0.1"
    print(f"\nTrackers on the same detections of {SEQUENCE_NAME} ({len(dets)} frames, {sum(map(len, dets))} "
          f"{source}), median of {args.rounds} round(s):")
    print(f"{'tracker':>18}{'ms/frame':>10}{'MOTA':>8}{'IDF1':>8}{'HOTA':>8}{'IDSW':>6}")
    for name in candidates:
        m = evaluate_mot(gt, rows[name], frames=len(dets))
        print(f"{name:>18}{statistics.median(times[name]):10.2f}{m.MOTA:8.3f}{m.IDF1:8.3f}{m.HOTA:8.3f}{m.IDSW:6d}")


if __name__ == "__main__":
    main()
