"""Tests for utils.ema.ModelEMA: decay ramp, exact blend over floating state, attribute copying."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from utils.ema import ModelEMA


def _toy() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model.train()
    return model


def test_ema_copy_is_fp32_eval_without_grads():
    model = _toy().half()
    ema = ModelEMA(model)
    assert ema.updates == 0 and ema.decay == 0.9999
    assert not ema.ema.training
    assert all(not p.requires_grad for p in ema.ema.parameters())
    assert all(p.dtype == torch.float32 for p in ema.ema.parameters())
    assert ema.ema is not model


def test_update_blends_exactly_with_ramped_decay():
    model = _toy()
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    before = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(3.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1 / 2.0))
    state = ema.ema.state_dict()
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(state[k], d * before[k] + (1 - d) * v, rtol=0, atol=1e-6)
    assert int(state["1.num_batches_tracked"]) == 0  # integer buffers are not averaged
    assert ema.updates == 1


def test_decay_ramps_towards_asymptote():
    ema = ModelEMA(_toy(), decay=0.9999, tau=2000, updates=0)
    assert ema.current_decay() == 0.0
    ema.updates = 2000
    assert math.isclose(ema.current_decay(), 0.9999 * (1 - math.exp(-1)))
    ema.updates = 10**6
    assert math.isclose(ema.current_decay(), 0.9999, rel_tol=1e-12)


def test_update_attr_copies_listed_attributes_only():
    model = _toy()
    ema = ModelEMA(model)
    model.nc, model.names, model.hyp = 3, {0: "a"}, {"box": 0.05}
    model.secret, model.reducer = 1, object()
    ema.update_attr(model)
    assert ema.ema.nc == 3 and ema.ema.names == {0: "a"} and ema.ema.hyp == {"box": 0.05}
    assert not hasattr(ema.ema, "secret") and not hasattr(ema.ema, "reducer")
