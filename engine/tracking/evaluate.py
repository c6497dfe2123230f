"""``track.py --eval``: track every sequence of a MOTChallenge folder and score the results against its ground truth.

Each sequence's frames (``img1/`` or its video) run through the same :class:`~engine.predictor.Predictor` and
tracking stage as track.py; results go to ``labels/<sequence>.txt`` and are scored with
:mod:`utils.tracking.metrics` (MOTA, IDF1, HOTA, ID switches, ...). ``metrics.csv`` gets one row per sequence plus
a combined row when there are several.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.predictor import Predictor
from engine.tracking.run import TrackOptions, build_track_writers, builtin_sequence, log_speed, open_model, run_tracker
from utils.files import increment_path
from utils.logging import LOGGER, colorstr
from utils.tracking.config import load_tracker_config
from utils.tracking.metrics import TrackingMetrics, score_sequence, summarize
from utils.tracking.mot import MotSequence, find_sequences, read_mot_file

__all__ = ["evaluate_tracking", "format_table", "TABLE_COLUMNS"]

TABLE_COLUMNS = ("HOTA", "MOTA", "IDF1", "IDSW", "DetA", "AssA", "IDP", "IDR", "MOTP", "FP", "FN", "MT", "ML",
                 "Frag", "gt_tracks", "pred_tracks", "frames")


def format_table(rows: list[tuple[str, TrackingMetrics]]) -> str:
    """Return a text table, one line per (name, metrics); ratios in percent with one decimal, counts whole."""
    header = f"{'sequence':>20}" + "".join(f"{c:>9}" for c in TABLE_COLUMNS[:14])
    lines = [header]
    for name, m in rows:
        values = m.as_dict()
        cells = [f"{values[c] * 100:9.1f}" if isinstance(values[c], float) else f"{values[c]:9d}"
                 for c in TABLE_COLUMNS[:14]]
        lines.append(f"{name:>20}" + "".join(cells))
    return "\n".join(lines)


def _write_csv(file: Path, rows: list[tuple[str, TrackingMetrics]]) -> None:
    with open(file, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("sequence", *TABLE_COLUMNS))
        for name, m in rows:
            values = m.as_dict()
            writer.writerow((name, *(f"{values[c]:.5f}" if isinstance(values[c], float) else values[c]
                                     for c in TABLE_COLUMNS)))


def _check_ground_truth(sequences: list[MotSequence]) -> None:
    missing = [str(s.folder) for s in sequences if s.gt_file is None]
    if missing:
        raise FileNotFoundError(f"--eval needs ground truth in gt/gt.txt; missing in: {', '.join(missing)}")


def evaluate_tracking(opt: TrackOptions) -> tuple[Path, TrackingMetrics, list[tuple[str, TrackingMetrics]]]:
    """Track and score every sequence at ``opt.source`` (default: the built-in sequence).

    Returns:
        (run folder, combined metrics, [(sequence name, its metrics), ...]).

    Raises:
        FileNotFoundError: no MOTChallenge sequence at ``source``, or one without ``gt/gt.txt``.
        ValueError: a malformed ground-truth file or tracker YAML (the file and line are named).
    """
    sequences = find_sequences(opt.source if opt.source is not None else builtin_sequence())
    _check_ground_truth(sequences)
    ground_truth = {s.name: read_mot_file(s.gt_file, min_columns=7) for s in sequences}
    config = load_tracker_config(opt.tracker)
    model = open_model(opt)
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    scores, rows = [], []
    for sequence in sequences:
        predictor = Predictor(model, replace(opt, source=str(sequence.frames)))
        dataset = predictor.load_source(str(sequence.frames))
        writers = build_track_writers(opt, save_dir, save_img=not opt.nosave, mot=True)
        stage = run_tracker(predictor, dataset, config, opt, save_dir, writers, frame_rate=sequence.frame_rate)
        log_speed(predictor, stage)
        result_file = save_dir / "labels" / f"{stage.sequences[0] if stage.sequences else sequence.name}.txt"
        pred = read_mot_file(result_file) if result_file.is_file() else np.zeros((0, 10))
        scores.append(score_sequence(ground_truth[sequence.name], pred, frames=sequence.length))
        rows.append((sequence.name, summarize(scores[-1:])))
    combined = summarize(scores)
    table_rows = rows + ([("COMBINED", combined)] if len(rows) > 1 else [])
    _write_csv(save_dir / "metrics.csv", table_rows)
    LOGGER.info(f"\nTracker {config.tracker_type} ({config.source}), {len(sequences)} sequence(s), IoU 0.5 for "
                f"CLEAR/Identity:\n{format_table(table_rows)}")
    LOGGER.info(f"Results saved to {colorstr('bold', save_dir)} (labels/<sequence>.txt, metrics.csv)")
    return save_dir, combined, rows

