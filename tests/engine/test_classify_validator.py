"""Classification metrics (engine/classify_validator.py) on hand-made cases: exact top-1/top-5, per class, loss,
and the model left as it was given."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.classify_validator import ClassifyValidator, accuracy_from_topk


def test_accuracy_from_topk_exact():
    targets = torch.tensor([0, 1, 2, 2])
    topk = torch.tensor([[0, 1, 2, 3, 4], [2, 0, 3, 4, 5], [2, 1, 0, 3, 4], [5, 6, 7, 8, 1]])
    top1, top5, counts, per1, per5 = accuracy_from_topk(topk, targets, nc=4)
    assert (top1, top5) == (0.5, 0.5)
    assert counts.tolist() == [1, 1, 2, 0]
    assert per1[:3].tolist() == [1.0, 0.0, 0.5] and per5[:3].tolist() == [1.0, 0.0, 0.5]
    assert math.isnan(per1[3]) and math.isnan(per5[3])


class _Fixed(nn.Module):
    """Returns fixed logits per batch position; has a parameter (device lookup) and a BN (mode check)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits, self.bn = logits, nn.BatchNorm1d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not self.training
        return self.logits[: len(x)]


def test_validator_metrics_loss_and_model_mode(log_lines):
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0]])
    labels = torch.tensor([0, 2, 1])
    loader = [(torch.zeros(3, 3, 4, 4), labels)]
    model = _Fixed(logits).train()
    metrics = ClassifyValidator(model, loader, 3, names={0: "a", 1: "b", 2: "c"})(verbose=True)
    assert model.training  # restored
    assert metrics.top1 == pytest.approx(1 / 3) and metrics.top5 == 1.0 and metrics.seen == 3
    expected = nn.functional.cross_entropy(logits, labels).item()
    assert metrics.loss == pytest.approx(expected)
    assert metrics.as_tuple() == (metrics.top1, metrics.top5, metrics.loss)
    text = "\n".join(log_lines)
    assert "top1_acc" in text and "all" in text and np.isclose(metrics.top1_per_class[0], 1.0)


def test_empty_loader_warns_and_returns_zeros(log_lines):
    metrics = ClassifyValidator(_Fixed(torch.zeros(1, 2)), [], 2)()
    assert metrics.seen == 0 and metrics.top1 == 0.0 and "no images" in "\n".join(log_lines)
