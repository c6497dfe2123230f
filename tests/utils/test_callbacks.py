"""Tests for utils.callbacks: upstream hook names, registration, ordering and failure isolation."""

from __future__ import annotations

import logging

import pytest

from utils.callbacks import HOOK_NAMES, Callbacks

UPSTREAM_HOOKS = [
    "on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start", "on_train_epoch_start",
    "on_train_batch_start", "optimizer_step", "on_before_zero_grad", "on_train_batch_end", "on_train_epoch_end",
    "on_val_start", "on_val_batch_start", "on_val_image_end", "on_val_batch_end", "on_val_end", "on_fit_epoch_end",
    "on_model_save", "on_train_end", "on_params_update", "teardown",
]


def test_hook_names_match_upstream():
    callbacks = Callbacks()
    assert list(HOOK_NAMES) == UPSTREAM_HOOKS
    assert list(callbacks.get_registered_actions()) == UPSTREAM_HOOKS
    assert all(callbacks.get_registered_actions(h) == [] for h in UPSTREAM_HOOKS)
    assert callbacks.stop_training is False


def test_run_calls_actions_in_order_with_arguments():
    callbacks, calls = Callbacks(), []
    callbacks.register_action("on_fit_epoch_end", "first", lambda *a, **k: calls.append(("first", a, k)))
    callbacks.register_action("on_fit_epoch_end", "second", lambda *a, **k: calls.append(("second", a, k)))
    callbacks.run("on_fit_epoch_end", [1, 2], 3, best=True)
    assert calls == [("first", ([1, 2], 3), {"best": True}), ("second", ([1, 2], 3), {"best": True})]
    assert [a["name"] for a in callbacks.get_registered_actions("on_fit_epoch_end")] == ["first", "second"]


def test_unknown_hook_and_non_callable_are_rejected():
    callbacks = Callbacks()
    with pytest.raises(KeyError, match="on_epoch_end"):
        callbacks.register_action("on_epoch_end", "x", print)
    with pytest.raises(KeyError, match="valid hooks"):
        callbacks.run("not_a_hook")
    with pytest.raises(TypeError, match="callable"):
        callbacks.register_action("teardown", "x", None)


def test_failing_callback_is_isolated_and_warned_once(caplog):
    callbacks, calls = Callbacks(), []

    def broken(*args):
        raise RuntimeError("logger offline")

    callbacks.register_action("on_train_batch_end", "wandb", broken)
    callbacks.register_action("on_train_batch_end", "csv", lambda *a: calls.append(a))
    logger = logging.getLogger("yolov5")
    logger.addHandler(caplog.handler)
    try:
        for i in range(3):
            callbacks.run("on_train_batch_end", i)
    finally:
        logger.removeHandler(caplog.handler)
    assert calls == [(0,), (1,), (2,)]
    warnings = [r.getMessage() for r in caplog.records if "wandb" in r.getMessage()]
    assert len(warnings) == 1
    assert "on_train_batch_end" in warnings[0] and "logger offline" in warnings[0]


def test_threaded_run_and_stop_flag():
    import threading

    callbacks, done = Callbacks(), threading.Event()
    callbacks.register_action("on_model_save", "t", lambda: done.set())
    callbacks.run("on_model_save", thread=True)
    assert done.wait(5)

    def stopper():
        callbacks.stop_training = True

    callbacks.register_action("on_train_epoch_end", "stop", stopper)
    callbacks.run("on_train_epoch_end")
    assert callbacks.stop_training is True
