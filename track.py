"""Track objects through videos, folders of frames, cameras and streams with ByteTrack, BoT-SORT or OC-SORT.

Usage:
    python track.py --weights best.pt --img 320                         # the built-in sequence's video
    python track.py --weights best.pt --source video.mp4 --tracker botsort --save-txt --save-csv --save-crop
    python track.py --weights best.onnx --source 0 --tracker my_tracker.yaml   # camera 0 (fails at once if none)
    python track.py --weights best.pt --img 320 --eval                  # MOTA, IDF1, HOTA on the built-in sequence
    python track.py --weights best.pt --eval --source MOT17/train       # any MOTChallenge-layout folder

Outputs go to ``runs/track/exp{N}``: annotated videos (stable colour and id per track, trails), ``labels/<seq>.txt``
in MOTChallenge format (``frame,id,x,y,w,h,conf,-1,-1,-1``), ``tracks.csv`` + ``track_summary.csv``,
``crops/<seq>/<id>/`` and, with ``--eval``, ``metrics.csv``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from detect import main as detect_main
from engine.predict_cli import build_predict_parser, parse_predict_args
from engine.tracking.evaluate import evaluate_tracking
from engine.tracking.run import TrackOptions, track
from utils.torch_utils import smart_inference_mode


@smart_inference_mode()
def run(weights: Any = ROOT / "yolov5s.pt", source: Any = None, data: Any = ROOT / "data/coco128.yaml",
        imgsz: Any = (640, 640), conf_thres: float = 0.1, iou_thres: float = 0.45, max_det: int = 1000,
        device: str = "", view_img: bool = False, save_txt: bool = False, save_format: int = 0,
        save_csv: bool = False, save_conf: bool = False, save_crop: bool = False, nosave: bool = False,
        classes: list[int] | None = None, agnostic_nms: bool = False, augment: bool = False,
        visualize: bool = False, update: bool = False, project: Any = ROOT / "runs/track", name: str = "exp",
        exist_ok: bool = False, line_thickness: int = 3, hide_labels: bool = False, hide_conf: bool = False,
        half: bool = False, dnn: bool = False, vid_stride: int = 1, fp32: bool = False, tracker: Any = "bytetrack",
        trail_length: int = 30, eval: bool = False) -> Any:
    """Track objects in ``source`` with ``weights`` and ``tracker``; return the run folder.

    With ``eval=True`` the source is a MOTChallenge folder (default: the built-in sequence) and the return value is
    ``(run folder, combined TrackingMetrics, [(sequence, TrackingMetrics), ...])``. The arguments are those of
    :class:`engine.tracking.run.TrackOptions` (detect.py's plus ``tracker``, ``trail_length``, ``eval``).
    """
    opt = TrackOptions(**locals())
    return evaluate_tracking(opt) if eval else track(opt)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse track.py's command line: every detect.py flag plus ``--tracker``, ``--trail-length`` and ``--eval``."""
    parser = build_predict_parser(TrackOptions(), "Track objects through videos, frame folders, cameras or streams, "
                                                  "or score tracking on MOTChallenge sequences (--eval)")
    add = parser.add_argument
    add("--tracker", default="bytetrack",
        help="bytetrack, botsort, ocsort, or a tracker YAML (keys as data/trackers/bytetrack.yaml)")
    add("--trail-length", type=int, default=30, help="frames of trail drawn behind each track (0: none)")
    add("--eval", action="store_true",
        help="score MOTA/IDF1/HOTA/ID switches against MOTChallenge ground truth: --source is a sequence folder or a "
             "folder of them (default: the built-in sequence)")
    parser.set_defaults(conf_thres=TrackOptions.conf_thres)
    return parse_predict_args(parser, argv)


def main(opt: argparse.Namespace) -> None:
    """Run track.py with parsed options; a bad input ends the process with status 1 and a one-line error."""
    detect_main(opt, run, "track.py")


if __name__ == "__main__":
    main(parse_opt())
