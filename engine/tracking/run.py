"""The track.py run: detect.py's prediction loop (:class:`engine.predictor.Predictor`) with a tracking stage and the
tracking writers plugged in; no second inference loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.predict_writers import FrameResult
from engine.predictor import PredictOptions, Predictor, PredictWriter, WriterKinds, build_writers
from engine.tracking.stage import TrackStage
from engine.tracking.writers import MotWriter, TrackCropWriter, TrackCsvWriter, TrackMediaWriter, TrackViewer
from models.backends import DetectMultiBackend
from utils.data.dataset_yaml import datasets_dir
from utils.data.sources import classify_source
from utils.data.track_sequence import SEQUENCE_NAME, ensure_track_sequence
from utils.files import increment_path
from utils.logging import LOGGER, colorstr
from utils.torch_utils import select_device
from utils.tracking.config import TrackerConfig, load_tracker_config

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["TrackOptions", "builtin_sequence", "build_track_writers", "track", "open_model", "run_tracker"]


@dataclass
class TrackOptions(PredictOptions):
    """Every setting of a track.py run: detect.py's (:class:`PredictOptions`) plus the tracker's.

    Defaults that differ from detect.py: ``source`` None (the built-in sequence's video), ``conf_thres`` 0.1 (ByteTrack
    associates low-score boxes in a second step, so NMS must keep them), ``project`` ``runs/track``.

    Attributes:
        tracker: built-in tracker name (``bytetrack``, ``botsort``, ``ocsort``) or a tracker YAML path.
        trail_length: frames of trail drawn behind each track (0: no trails).
        eval: score the tracks against MOTChallenge ground truth (``source``: a sequence folder or a folder of them;
            default the built-in sequence) and write ``metrics.csv``.
    """

    source: Any = None
    conf_thres: float = 0.1
    project: Any = ROOT / "runs/track"
    tracker: Any = "bytetrack"
    trail_length: int = 30
    eval: bool = False


class _SequenceVideo(TrackMediaWriter):
    """Save an image sequence (a folder of frames) as one ``<sequence>.mp4`` instead of one image per frame.

    A frame whose size differs from the sequence's first frame (a folder of unrelated images) is saved as an image.
    """

    def __init__(self, save_dir: Path, style: Any):
        super().__init__(save_dir, style)
        self.sizes: dict[str, tuple] = {}

    def write(self, result: FrameResult) -> None:
        """Save the annotated frame; frames of an image folder go into its sequence video."""
        if result.mode == "image" and result.tracks is not None:
            size = self.sizes.setdefault(result.tracks.sequence, result.im0.shape)
            if size == result.im0.shape:
                result = replace(result, path=f"{result.tracks.sequence}.mp4", mode="video")
        super().write(result)


TRACK_WRITERS = WriterKinds(labels=lambda opt, folder: MotWriter(folder), csv=TrackCsvWriter, crop=TrackCropWriter,
                            viewer=TrackViewer, media=_SequenceVideo)


def builtin_sequence() -> Path:
    """Return the folder of the built-in tracking sequence, generating it on first use."""
    return ensure_track_sequence(datasets_dir() / SEQUENCE_NAME)


def build_track_writers(opt: TrackOptions, save_dir: Path, save_img: bool, webcam: bool = False,
                        mot: bool = False) -> list[PredictWriter]:
    """Return the writers after the tracking stage: MOT text (``save_txt`` or ``mot``), CSV, crops, viewer, video."""
    return build_writers(opt, save_dir, save_img, webcam, TRACK_WRITERS, labels=opt.save_txt or mot)


def open_model(opt: PredictOptions) -> DetectMultiBackend:
    """Load the detector of ``opt`` (any checkpoint or export :class:`DetectMultiBackend` reads)."""
    return DetectMultiBackend(opt.weights, device=select_device(opt.device), dnn=opt.dnn, data=opt.data,
                              fp16=opt.half, fp32=opt.fp32)


def run_tracker(predictor: Predictor, dataset: Any, config: TrackerConfig, opt: TrackOptions, save_dir: Path,
                writers: list[PredictWriter], frame_rate: float = 30.0) -> TrackStage:
    """Drive ``predictor`` over ``dataset`` with a tracking stage in front of ``writers``; return the stage."""
    stage = TrackStage(config, opt.vid_stride, opt.trail_length, frame_rate)
    predictor.writers = [stage, *writers]
    predictor.run(dataset, save_dir)
    return stage


def log_speed(predictor: Predictor, stage: TrackStage) -> None:
    """Log detect.py's speed line plus the tracker's milliseconds per frame."""
    predictor.log_speed()
    LOGGER.info(f"Tracking: {stage.times.t / max(predictor.seen, 1) * 1e3:.1f}ms per frame "
                f"({stage.config.tracker_type}, {len(stage.sequences)} sequence{'s' * (len(stage.sequences) != 1)})")


def track(opt: TrackOptions) -> Path:
    """Track objects through ``opt.source`` as track.py does; return the run folder.

    The model, the tracker YAML and the source are all opened before the run folder is created, so a bad input
    fails at once and leaves nothing behind.
    """
    config = load_tracker_config(opt.tracker)
    source = str(opt.source) if opt.source is not None else str(builtin_sequence() / f"{SEQUENCE_NAME}.mp4")
    kind = classify_source(source)
    save_img = not opt.nosave and not kind.list_file
    model = open_model(opt)
    predictor = Predictor(model, opt)
    dataset = predictor.load_source(source)
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    stage = run_tracker(predictor, dataset, config, opt, save_dir,
                        build_track_writers(opt, save_dir, save_img, kind.webcam))
    if not predictor.seen:
        if not any(save_dir.iterdir()):
            save_dir.rmdir()
        raise ValueError(f"No frames could be read from {source} (corrupt, empty or unsupported video?)")
    log_speed(predictor, stage)
    labels = f"\nMOT results saved to {save_dir / 'labels'}" if opt.save_txt else ""
    LOGGER.info(f"Results saved to {colorstr('bold', save_dir)}{labels}")
    return save_dir
