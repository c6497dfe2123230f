"""results.csv writing (upstream format), resume trimming and plot hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from utils.callbacks import Callbacks
from utils.loggers.csv_logger import RESULTS_KEYS, RunLogger


def test_csv_rows_are_width_20_and_appended(tmp_path):
    logger = RunLogger(tmp_path, plots=False)
    logger.on_fit_epoch_end([0.1] * 10 + [0.01, 0.001, 0.001], 0, 0.5, 0.5)
    logger.on_fit_epoch_end([0.123456789] * 13, 1, 0.5, 0.4)
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0] == ",".join(f"{k:>20}" for k in ("epoch", *RESULTS_KEYS))
    assert lines[1].split(",")[0] == " " * 19 + "0" and lines[2].split(",")[1] == " " * 13 + "0.12346"
    assert len(lines) == 3 and all(len(c) == 20 for line in lines for c in line.split(","))
    with pytest.raises(ValueError, match="expects 13 values, got 2"):
        logger.on_fit_epoch_end([1, 2], 2, 0, 0)


def test_truncate_from_drops_rows_of_retrained_epochs(tmp_path):
    logger = RunLogger(tmp_path, plots=False)
    for epoch in range(4):
        logger.on_fit_epoch_end([float(epoch)] * 13, epoch, 0, 0)
    logger.truncate_from(2)
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and [float(r.split(",")[0]) for r in rows[1:]] == [0.0, 1.0]
    logger.truncate_from(5)
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 3


def test_register_and_plots(tmp_path):
    callbacks = Callbacks()
    RunLogger(tmp_path, plots=True).register(callbacks)
    assert all(len(callbacks.get_registered_actions(h)) == 1 for h in
               ("on_pretrain_routine_end", "on_train_batch_end", "on_fit_epoch_end", "on_train_end"))
    images = np.zeros((2, 3, 64, 64), dtype=np.uint8)
    targets = np.array([[0, 1, 0.5, 0.5, 0.2, 0.2]])
    callbacks.run("on_train_batch_end", None, 3, images, targets, ["a.jpg", "b.jpg"], [0, 0, 0])
    assert not (tmp_path / "train_batch3.jpg").exists(), "only the first three batches are plotted"
    callbacks.run("on_train_batch_end", None, 0, images, targets, ["a.jpg", "b.jpg"], [0, 0, 0])
    assert (tmp_path / "train_batch0.jpg").is_file()
    for epoch in range(3):
        callbacks.run("on_fit_epoch_end", [0.5 / (epoch + 1)] * 13, epoch, 0, 0)
    callbacks.run("on_train_end", Path("last.pt"), Path("best.pt"), 2, (0,) * 7)
    assert (tmp_path / "results.png").stat().st_size > 10_000


def test_teardown_deactivates_the_logger_for_reused_callbacks(tmp_path):
    callbacks = Callbacks()
    RunLogger(tmp_path, plots=False).register(callbacks)
    callbacks.run("on_fit_epoch_end", [0.0] * 13, 0, 0, 0)
    callbacks.run("teardown")
    callbacks.run("on_fit_epoch_end", [0.0] * 13, 1, 0, 0)
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 2
