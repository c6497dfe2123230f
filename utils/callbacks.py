"""Upstream-compatible callback registry: loggers and extensions hook into training and validation by name.

The 19 hook names and their call order match upstream YOLOv5, so existing logger callbacks plug in unchanged.
A callback that raises is isolated: one warning is logged per failing callback (not per call) and the run goes on.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from utils.logging import LOGGER

__all__ = ["Callbacks", "HOOK_NAMES"]

HOOK_NAMES = (
    "on_pretrain_routine_start",
    "on_pretrain_routine_end",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_val_start",
    "on_val_batch_start",
    "on_val_image_end",
    "on_val_batch_end",
    "on_val_end",
    "on_fit_epoch_end",
    "on_model_save",
    "on_train_end",
    "on_params_update",
    "teardown",
)


class Callbacks:
    """Named lists of actions per hook; ``run(hook, ...)`` calls each registered action in registration order.

    Attributes:
        stop_training: set by a callback to ask the trainer to stop after the current step/epoch.
    """

    def __init__(self) -> None:
        self._callbacks: dict[str, list[dict[str, Any]]] = {name: [] for name in HOOK_NAMES}
        self.stop_training = False
        self._warned: set[tuple[str, str]] = set()

    def register_action(self, hook: str, name: str = "", callback: Callable[..., Any] | None = None) -> None:
        """Register ``callback`` under ``hook`` with an optional ``name`` (shown in failure warnings).

        Raises:
            KeyError: ``hook`` is not one of :data:`HOOK_NAMES` (the message lists them).
            TypeError: ``callback`` is not callable.
        """
        if hook not in self._callbacks:
            raise KeyError(f"hook '{hook}' not found in callbacks; valid hooks: {', '.join(HOOK_NAMES)}")
        if not callable(callback):
            raise TypeError(f"callback for hook '{hook}' ('{name}') must be callable, got {type(callback).__name__}")
        self._callbacks[hook].append({"name": name, "callback": callback})

    def get_registered_actions(self, hook: str | None = None) -> Any:
        """Return the actions of ``hook`` (list of ``{'name', 'callback'}``), or the whole hook dict if None."""
        return self._callbacks[hook] if hook else self._callbacks

    def run(self, hook: str, *args: Any, thread: bool = False, **kwargs: Any) -> None:
        """Call every action registered under ``hook`` with ``*args, **kwargs`` (in a daemon thread if ``thread``).

        Raises:
            KeyError: ``hook`` is not a known hook name.
        """
        if hook not in self._callbacks:
            raise KeyError(f"hook '{hook}' not found in callbacks; valid hooks: {', '.join(HOOK_NAMES)}")
        for action in self._callbacks[hook]:
            if thread:
                threading.Thread(target=self._call, args=(hook, action, args, kwargs), daemon=True).start()
            else:
                self._call(hook, action, args, kwargs)

    def _call(self, hook: str, action: dict[str, Any], args: tuple, kwargs: dict) -> None:
        try:
            action["callback"](*args, **kwargs)
        except Exception as e:  # a broken logger must never stop training
            key = (hook, action["name"] or repr(action["callback"]))
            if key not in self._warned:
                self._warned.add(key)
                LOGGER.warning(f"WARNING ⚠️ callback '{key[1]}' on hook '{hook}' raised {type(e).__name__}: {e}; "
                               f"training continues (further errors from this callback are not reported)")
