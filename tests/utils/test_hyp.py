"""utils.hyp.Hyp: upstream hyp YAML round trip, unknown keys, immutability, the scaled copy."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from utils.files import ROOT
from utils.hyp import Hyp

HYP_FILES = sorted((ROOT / "data" / "hyps").glob("*.yaml"))


@pytest.mark.parametrize("file", HYP_FILES, ids=[f.name for f in HYP_FILES])
def test_every_hyp_file_round_trips_with_its_keys_and_values(file, tmp_path):
    values = yaml.safe_load(file.read_text())
    hyp = Hyp.from_yaml(file)
    assert hyp.to_dict() == values and list(hyp.to_dict()) == [k for k in Hyp.keys() if k in values]
    assert Hyp.from_yaml(hyp.to_yaml(tmp_path / "hyp.yaml")) == hyp
    assert hyp["box"] == values["box"] and hyp.lr0 == values["lr0"]


def test_optional_keys_are_left_out_until_set_and_nbs_defaults_to_64():
    hyp = Hyp.from_dict({"lr0": 0.02})
    assert not {"anchors", "nbs", "label_smoothing"} & set(hyp.to_dict()) and hyp.nominal_batch_size == 64
    assert Hyp.from_dict({"nbs": 16, "anchors": 3}).to_dict()["nbs"] == 16
    with pytest.raises(KeyError):
        hyp["nbs"]


def test_unknown_key_is_rejected_with_the_closest_name_and_extension_keys_are_kept():
    with pytest.raises(KeyError, match="'lr_0' \\(did you mean 'lr0'\\?\\)"):
        Hyp.from_dict({"lr_0": 0.01})
    hyp = Hyp.from_dict({"box": 0.1, "v3_loss": 2, "v3_box": 0.5})
    assert hyp.extra == {"v3_loss": 2, "v3_box": 0.5} and hyp.to_dict()["v3_box"] == 0.5


def test_hyp_is_frozen():
    hyp = Hyp()
    with pytest.raises(dataclasses.FrozenInstanceError):
        hyp.box = 1.0
    with pytest.raises(TypeError):
        hyp.extra["v3_box"] = 1.0


def test_scaled_returns_a_gain_scaled_copy_and_leaves_the_original():
    hyp = Hyp.from_yaml(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml")
    scaled = hyp.scaled(levels=3, nc=8, imgsz=320, label_smoothing=0.1, batch_size=16, accumulate=4)
    assert scaled.box == pytest.approx(0.05) and scaled.cls == pytest.approx(0.5 * 8 / 80)
    assert scaled.obj == pytest.approx(1.0 * 0.25) and scaled.label_smoothing == 0.1
    assert scaled.weight_decay == pytest.approx(0.0005 * 16 * 4 / 64) and scaled.lr0 == hyp.lr0
    assert (hyp.cls, hyp.label_smoothing) == (0.5, None), "the original is unchanged"
    two_levels = hyp.scaled(levels=2, nc=80, imgsz=640, label_smoothing=0.0, batch_size=64, accumulate=1)
    assert (two_levels.box, two_levels.cls, two_levels.obj) == pytest.approx((0.075, 0.75, 1.5))


def test_non_strict_from_dict_leaves_unknown_keys_out():
    hyp = Hyp.from_dict({"lr0": 0.02, "my_fork_key": 3.0}, strict=False)
    assert hyp.lr0 == 0.02 and "my_fork_key" not in hyp.to_dict()
    with pytest.raises(KeyError, match="my_fork_key"):
        Hyp.from_dict({"lr0": 0.02, "my_fork_key": 3.0})

