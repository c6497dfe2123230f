"""Hyperparameter evolution: parent selection, mutation limits and the evolve.csv/hyp_evolve.yaml records."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from engine.evolve import META, RESULT_KEYS, clamp, mutate, record_generation, select_parent
from engine.train_options import TrainError
from utils.plotting.results import read_csv_table


def test_clamp_limits_and_rounds():
    assert clamp({"lr0": 0.5, "momentum": 0.1, "custom": 1.234567}) == {"lr0": 0.1, "momentum": 0.6,
                                                                          "custom": 1.23457}


def test_mutate_changes_gain_keys_only_within_limits_and_is_seeded():
    hyp = {"lr0": 0.01, "iou_t": 0.2, "fliplr": 0.5, "mosaic": 1.0, "scale": 0.5, "not_in_meta": 7.0}
    first = mutate(hyp, hyp, np.random.default_rng([0, 1]))
    assert first == mutate(hyp, hyp, np.random.default_rng([0, 1]))
    assert first != mutate(hyp, hyp, np.random.default_rng([0, 2]))
    assert (first["iou_t"], first["fliplr"], first["not_in_meta"]) == (0.2, 0.5, 7.0), "gain 0: frozen"
    assert any(first[k] != hyp[k] for k in ("lr0", "mosaic", "scale"))
    for key in ("lr0", "mosaic", "scale"):
        assert META[key][1] <= first[key] <= META[key][2]
        assert first[key] / hyp[key] <= 3.0 + 1e-9


def test_select_parent_draws_from_the_five_fittest():
    history = np.zeros((8, 9))
    history[:, 3] = np.arange(8) / 10  # mAP50-95 drives fitness
    picks = {int(select_parent(history, np.random.default_rng(s))[3] * 10) for s in range(50)}
    assert picks <= {3, 4, 5, 6, 7} and 7 in picks


def test_record_generation_appends_csv_and_keeps_best_yaml(tmp_path):
    record_generation(tmp_path, [0.1, 0.2, 0.3, 0.2, 0.05, 0.02, 0.01], {"lr0": 0.01, "mosaic": 1.0})
    record_generation(tmp_path, [0.1, 0.2, 0.1, 0.05, 0.05, 0.02, 0.01], {"lr0": 0.02, "mosaic": 0.5})
    header, values = read_csv_table(tmp_path / "evolve.csv")
    assert header == [*RESULT_KEYS, "lr0", "mosaic"] and values.shape == (2, 9)
    text = (tmp_path / "hyp_evolve.yaml").read_text()
    assert "# Best generation: 0" in text and "# Last generation: 1" in text
    assert yaml.safe_load(text) == {"lr0": 0.01, "mosaic": 1.0}
    with pytest.raises(TrainError, match="use a new --name"):
        record_generation(tmp_path, [0.0] * 7, {"lr0": 0.01})
