"""Seeds, weight transfer, freezing, the AMP check and the AutoBatch fit."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from utils.checkpoint import make_checkpoint, save_checkpoint
from engine.train_setup import (
    check_amp,
    check_train_batch_size,
    fit_batch_size,
    freeze_layers,
    init_seeds,
    intersect_dicts,
    pretrained_model_yaml,
    read_pretrained,
    transfer_weights,
)


class Tiny(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, classes, 1))
        self.register_buffer("anchors", torch.ones(2))
        self.yaml = {"nc": classes}


def test_init_seeds_makes_python_numpy_and_torch_repeatable():
    draws = []
    for _ in range(2):
        init_seeds(5)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]


def test_init_seeds_deterministic_mode_is_warn_only():
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        init_seeds(1, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_intersect_dicts_keeps_same_name_same_shape_and_honours_exclude():
    source = {"a": torch.zeros(2), "b": torch.zeros(3), "anchors": torch.zeros(2), "extra": torch.zeros(1)}
    target = {"a": torch.ones(2), "b": torch.ones(4), "anchors": torch.ones(2)}
    assert list(intersect_dicts(source, target)) == ["a", "anchors"]
    assert list(intersect_dicts(source, target, exclude=["anchor"])) == ["a"]


def test_transfer_weights_reports_counts_and_copies_values():
    source, target = Tiny(classes=3), Tiny(classes=5)
    for p in source.parameters():
        nn.init.constant_(p, 0.25)
    count = transfer_weights(target, source.state_dict(), source="src.pt")
    assert count == len(target.state_dict()) - 2  # the last conv's weight and bias change shape
    assert torch.all(target.model[0].weight == 0.25) and not torch.all(target.model[2].weight == 0.25)


def test_read_pretrained_accepts_checkpoints_and_plain_state_dicts(tmp_path, monkeypatch):
    from utils import checkpoint

    monkeypatch.setattr(checkpoint, "_extra_safe", [Tiny])  # a test-only class, allowed for this test
    model = Tiny()
    ckpt_file, state_file = tmp_path / "c.pt", tmp_path / "s.pt"
    save_checkpoint(make_checkpoint(model), ckpt_file)
    torch.save(model.state_dict(), state_file)
    from_ckpt, from_state = read_pretrained(ckpt_file), read_pretrained(state_file)
    assert from_ckpt.model is not None and pretrained_model_yaml(from_ckpt, ckpt_file) == {"nc": 3}
    assert all(v.dtype == torch.float32 for v in from_ckpt.state_dict.values() if v.is_floating_point())
    assert from_state.model is None and from_state.state_dict.keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match="plain state dict without an architecture; also pass --cfg"):
        pretrained_model_yaml(from_state, state_file)


def test_freeze_layers_one_value_is_a_prefix_count_several_are_indices():
    model = Tiny()
    assert freeze_layers(model, [2]) == ["model.0.weight", "model.0.bias", "model.1.weight", "model.1.bias"]
    assert freeze_layers(model, [0, 2]) == ["model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"]
    assert freeze_layers(model, [0]) == [] and all(p.requires_grad for p in model.parameters())


def test_check_amp_is_off_on_cpu():
    assert check_amp(Tiny()) is False


def test_autobatch_uses_default_on_cpu_and_fits_memory_linearly():
    assert check_train_batch_size(Tiny(), 64, default=16) == 16
    sizes = [1, 2, 4, 8, 16]
    memory = [0.4 + 0.3 * b for b in sizes]  # 0.3 GB per image + 0.4 GB fixed
    assert fit_batch_size(sizes, memory, free_gb=10.0, fraction=0.8) == 25  # int((8 - 0.4) / 0.3)
    assert fit_batch_size(sizes, [1.0] * 5, free_gb=10.0) == 16, "a flat fit is anomalous: default"
    assert fit_batch_size([1, 2], [0.1, None], free_gb=10.0) == 16
