"""End-to-end tracking speed and accuracy on the built-in 640x480 sequence, per tracker and backend.

Each run is what ``python track.py --source shapes-track.mp4 --save-txt`` does: decode the video, letterbox, infer,
NMS, track, and write the annotated video and the MOT text; the script times every stage per frame:

* decode = video decode + letterbox + HWC->CHW (the loader), pre = uint8 -> float tensor,
* infer = the backend call, NMS, track = the tracker update, write = drawing + video encoding + MOT text,
* frames/s = frames / wall time of the whole loop (so it includes everything, also what is not in a stage).

The MOT text of each run is scored against the sequence's ground truth (MOTA, IDF1, HOTA, ID switches).
Backends: the ``.pt`` file through ``DetectMultiBackend`` (the CPU fast path: bf16 + channels_last with native bf16,
else fp32 + channels_last), and with ``--onnx`` its ONNX export run by ONNX Runtime (exported at the letterboxed
frame shape, 256x320 for 320 px). Runs alternate between configurations ``--rounds`` times (so machine load affects
all alike); the medians of the rounds are printed.

Usage: ``python benchmarks/bench_track.py --weights best.pt [--img 320] [--onnx] [--trackers bytetrack botsort
ocsort] [--rounds 3] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

import export
from engine.predictor import Predictor
from engine.tracking.run import TrackOptions, builtin_sequence
from engine.tracking.stage import TrackStage
from engine.tracking.writers import MotWriter, TrackMediaWriter
from models.backends import DetectMultiBackend
from utils.data.track_sequence import SEQUENCE_NAME
from utils.logging import LOGGER
from utils.profiling import Profile
from utils.tracking.config import load_tracker_config
from utils.tracking.metrics import evaluate_mot
from utils.tracking.mot import read_mot_file

STAGES = ("decode", "pre", "infer", "NMS", "track", "write")


class TimedLoader:
    """Wrap a loader: time each ``next()`` (decode + letterbox) and pass its attributes through."""

    def __init__(self, loader):
        self.loader, self.profile = loader, Profile()

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            with self.profile:
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item

    def __getattr__(self, name):
        return getattr(self.loader, name)


class TimedWriters:
    """Drive several writers as one and time them together."""

    def __init__(self, writers):
        self.writers, self.profile = writers, Profile()

    def write(self, result):
        with self.profile:
            for writer in self.writers:
                writer.write(result)

    def close(self):
        with self.profile:
            for writer in self.writers:
                writer.close()


@dataclass
class RunResult:
    ms: dict
    fps: float
    metrics: object


def run_once(model, imgsz, tracker: str, video: Path, gt, folder: Path) -> RunResult:
    opt = TrackOptions(imgsz=imgsz, conf_thres=0.1, tracker=tracker, device="cpu")
    predictor = Predictor(model, opt)
    loader = TimedLoader(predictor.load_source(str(video)))
    stage = TrackStage(load_tracker_config(tracker), 1, opt.trail_length)
    writers = TimedWriters([MotWriter(folder), TrackMediaWriter(folder, opt.style)])
    predictor.writers = [stage, writers]
    start = time.perf_counter()
    frames = predictor.run(loader, folder)
    wall = time.perf_counter() - start
    times = (loader.profile.t, *(t.t for t in predictor.times), stage.times.t, writers.profile.t)
    ms = {name: t / frames * 1e3 for name, t in zip(STAGES, times, strict=True)}
    ms["total"] = wall / frames * 1e3
    metrics = evaluate_mot(gt, read_mot_file(folder / "labels" / f"{SEQUENCE_NAME}.txt"), frames=frames)
    return RunResult(ms, frames / wall, metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a detection .pt checkpoint trained on the built-in shapes")
    parser.add_argument("--img", type=int, default=320, help="inference size (long side) in pixels")
    parser.add_argument("--trackers", nargs="+", default=["bytetrack", "botsort", "ocsort"])
    parser.add_argument("--onnx", action="store_true", help="also time the ONNX Runtime export")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    LOGGER.setLevel(logging.WARNING)
    sequence = builtin_sequence()
    video, gt = sequence / f"{SEQUENCE_NAME}.mp4", read_mot_file(sequence / "gt" / "gt.txt", min_columns=7)
    folder = Path(tempfile.mkdtemp(prefix="bench_track_"))
    backends = {"PyTorch .pt": (DetectMultiBackend(args.weights), (args.img, args.img))}
    if args.onnx:
        shape = (args.img * 480 // 640 + 31) // 32 * 32, args.img  # the letterboxed 640x480 frame
        weights_copy = folder / Path(args.weights).name  # export writes beside the weights: use a copy
        shutil.copy(args.weights, weights_copy)
        onnx_file = export.run(weights=weights_copy, imgsz=shape, include=("onnx",), opset=17)[0]
        backends["ONNX Runtime"] = (DetectMultiBackend(onnx_file), shape)
    results: dict[tuple[str, str], list[RunResult]] = {}
    for round_index in range(args.rounds):
        for backend, (model, imgsz) in backends.items():
            for tracker in args.trackers:
                run_dir = folder / f"{round_index}_{len(results)}"
                results.setdefault((backend, tracker), []).append(run_once(model, imgsz, tracker, video, gt, run_dir))
    print(f"\nEnd-to-end tracking of {video.name} (640x480, {len(gt)} gt rows), "
          f"{args.img} px, {args.threads} threads, median of {args.rounds} round(s), ms per frame:")
    header = f"{'backend':>13} {'tracker':>10}" + "".join(f"{s:>8}" for s in (*STAGES, "total")) + \
        f"{'fps':>7}{'track%':>8}{'MOTA':>7}{'IDF1':>7}{'HOTA':>7}{'IDSW':>6}"
    print(header)
    for (backend, tracker), runs in results.items():
        ms = {k: statistics.median(r.ms[k] for r in runs) for k in (*STAGES, "total")}
        fps = statistics.median(r.fps for r in runs)
        m = runs[-1].metrics
        print(f"{backend:>13} {tracker:>10}" + "".join(f"{ms[k]:8.1f}" for k in (*STAGES, "total"))
              + f"{fps:7.1f}{100 * ms['track'] / ms['total']:7.1f}%{m.MOTA:7.3f}{m.IDF1:7.3f}{m.HOTA:7.3f}"
              + f"{m.IDSW:6d}")


if __name__ == "__main__":
    main()
