"""Fixtures shared across the test packages: a tiny built-in-style dataset and a log collector."""

from __future__ import annotations

import logging

import pytest

from tests.dataset_support import write_shapes_yaml
from tests.module_support import import_file
from utils.logging import LOGGER


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A dataset YAML for 8 train and 4 val images (64 px scale) of the built-in shapes generator, 8 classes."""
    return write_shapes_yaml(tmp_path_factory.mktemp("data"), {"train": 8, "val": 4})


@pytest.fixture
def log_lines():
    """Collect the project logger's messages during a test."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    LOGGER.addHandler(handler)
    yield lines
    LOGGER.removeHandler(handler)


@pytest.fixture(scope="module")
def hubconf():
    """The repository's hubconf.py imported as a module (as torch.hub.load(..., source='local') would)."""
    return import_file("hubconf.py", "hubconf_under_test")
