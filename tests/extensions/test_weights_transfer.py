"""Whole-model weight transfer (``--weights``): reading weight files, matching tensors, freezing layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from extensions.transfer import freeze_layers, intersect_dicts, pretrained_model_yaml, read_pretrained, transfer_weights
from utils.checkpoint import make_checkpoint, save_checkpoint


class Tiny(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, classes, 1))
        self.register_buffer("anchors", torch.ones(2))
        self.yaml = {"nc": classes}


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


def test_weights_and_backbone_weights_share_one_file_reader(tmp_path, monkeypatch):
    from extensions import transfer

    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    model = Tiny()
    file = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(file))
    read = []
    original = transfer.read_weights
    monkeypatch.setattr(transfer, "read_weights", lambda path: read.append(path) or original(path))
    source = read_pretrained(file)
    assert source.model is None and source.state_dict.keys() == model.state_dict().keys() and read == [file]
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        read_pretrained(tmp_path / "missing.pt")
