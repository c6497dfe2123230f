"""Quiet model summaries in compatibility tests."""

from __future__ import annotations

import logging

import pytest

from utils.logging import LOGGER


@pytest.fixture(autouse=True)
def _quiet_logger():
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    yield
    LOGGER.setLevel(level)
