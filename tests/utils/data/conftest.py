"""Fixtures shared by the data-pipeline tests."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def log_text(caplog):
    """Capture the project logger (it does not propagate to root by default)."""
    logger = logging.getLogger("yolov5")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="yolov5")
    yield caplog
    logger.removeHandler(caplog.handler)
