"""engine.detection_setup: the run's hyperparameters as stored (dict) and as used (Hyp)."""

from __future__ import annotations

import pytest

from engine.detection_setup import load_run_hyp
from engine.train_options import DEFAULT_HYP, TrainError, load_hyp


def test_unknown_hyp_key_warns_is_stored_and_is_left_out_of_the_hyp(log_lines):
    values = {**load_hyp(DEFAULT_HYP), "lr0": 0.02, "my_fork_key": 3.0}
    stored, hyp = load_run_hyp(values)
    assert stored["my_fork_key"] == 3.0, "hyp.yaml keeps the user's keys, as upstream does"
    assert hyp.lr0 == 0.02 and "my_fork_key" not in hyp.to_dict()
    assert any("unknown hyperparameter 'my_fork_key'" in line for line in log_lines)


def test_non_positive_nominal_batch_size_is_an_error():
    with pytest.raises(TrainError, match="nbs=0"):
        load_run_hyp({**load_hyp(DEFAULT_HYP), "nbs": 0})
