"""Tests for utils.optim: parameter groups, optimiser types, LR lambdas, EarlyStopping, class/image weights."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from utils.optim import (
    EarlyStopping,
    labels_to_class_weights,
    labels_to_image_weights,
    linear_lr,
    one_cycle,
    smart_optimizer,
)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)  # weight -> decay
        self.bn = nn.BatchNorm2d(8)  # weight -> no decay, bias -> bias group
        self.ln = nn.LayerNorm(8)  # weight -> no decay, bias -> bias group
        self.head = nn.Conv2d(8, 4, 1)  # weight -> decay, bias -> bias group
        self.scale = nn.Parameter(torch.ones(1))  # not a bias, not a norm weight -> decay


def _ids(params):
    return {id(p) for p in params}


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSProp"])
def test_three_groups_in_upstream_order(name):
    net = _Net()
    opt = smart_optimizer(net, name, lr=0.01, momentum=0.9, decay=5e-4)
    biases, decayed, norms = (g["params"] for g in opt.param_groups)
    assert _ids(biases) == _ids([net.bn.bias, net.ln.bias, net.head.bias])
    assert _ids(decayed) == _ids([net.conv.weight, net.head.weight, net.scale])
    assert _ids(norms) == _ids([net.bn.weight, net.ln.weight])
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    assert all(g["lr"] == 0.01 for g in opt.param_groups)


def test_optimizer_kinds_and_settings():
    net = _Net()
    sgd = smart_optimizer(net, "SGD", lr=0.01, momentum=0.937)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.937
    adam = smart_optimizer(net, "Adam", momentum=0.8)
    assert type(adam) is torch.optim.Adam and adam.defaults["betas"] == (0.8, 0.999)
    adamw = smart_optimizer(net, "AdamW", momentum=0.8)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.0
    assert isinstance(smart_optimizer(net, "rmsprop"), torch.optim.RMSprop)
    with pytest.raises(NotImplementedError, match="Lion"):
        smart_optimizer(net, "Lion")


def test_optimizer_log_line(caplog):
    logger = logging.getLogger("yolov5")
    logger.addHandler(caplog.handler)
    try:
        smart_optimizer(_Net(), "SGD", lr=0.01, decay=0.0005)
    finally:
        logger.removeHandler(caplog.handler)
    assert "SGD(lr=0.01) with parameter groups 2 weight(decay=0.0), 3 weight(decay=0.0005), 3 bias" in caplog.text


def test_lr_lambdas():
    lf = linear_lr(10, 0.01)
    assert lf(0) == 1.0 and math.isclose(lf(10), 0.01) and math.isclose(lf(5), 0.505)
    cf = one_cycle(1, 0.01, 10)
    assert math.isclose(cf(0), 1.0) and math.isclose(cf(10), 0.01) and math.isclose(cf(5), 0.505)
    assert math.isclose(one_cycle()(50), 0.5)


def test_early_stopping_head_semantics():
    stopper = EarlyStopping(patience=3)
    assert stopper(0, 0.0) is False and stopper.best_epoch == 0  # first epoch counts (initial best -1)
    assert stopper(1, 0.5) is False and stopper.best_epoch == 1
    assert stopper(2, 0.5) is False and stopper.best_epoch == 1  # equal fitness is not an improvement
    assert stopper.possible_stop is False
    assert stopper(3, 0.4) is False and stopper.possible_stop is True  # 2 epochs since best = patience - 1
    assert stopper(4, 0.4) is True


def test_early_stopping_disabled_with_zero_patience():
    stopper = EarlyStopping(patience=0)
    assert not any(stopper(e, 0.1) for e in range(500))


def test_class_and_image_weights():
    labels = [np.array([[0, .5, .5, .1, .1], [0, .5, .5, .1, .1], [2, .5, .5, .1, .1]]),
              np.array([[2, .5, .5, .1, .1]]), np.zeros((0, 5))]
    w = labels_to_class_weights(labels, nc=4)
    expected = np.array([1 / 2, 1, 1 / 2, 1])  # counts 2, 0->1, 2, 0->1
    np.testing.assert_allclose(w.numpy(), expected / expected.sum(), rtol=1e-6)
    image_w = labels_to_image_weights(labels, nc=4, class_weights=np.array([1.0, 10.0, 100.0, 1000.0]))
    np.testing.assert_allclose(image_w, [102.0, 100.0, 0.0])
    np.testing.assert_allclose(labels_to_image_weights(labels, nc=4), [3.0, 1.0, 0.0])
