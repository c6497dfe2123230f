"""Shared fixtures for model tests: the upstream parity files and quiet logging."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from utils.logging import LOGGER

REPO_ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "upstream"
UPSTREAM_SEG_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "upstream-seg"


@pytest.fixture(scope="session")
def upstream_fixture_dir() -> Path:
    """Folder with upstream's yolov5n-trained.pt and .parity.pt (``../shared`` beside the repo); skip if absent."""
    if not (UPSTREAM_FIXTURES / "yolov5n-trained.pt").is_file():
        pytest.skip(f"upstream parity fixtures not found in {UPSTREAM_FIXTURES} (../shared beside the repository)")
    return UPSTREAM_FIXTURES


@pytest.fixture(scope="session")
def parity(upstream_fixture_dir: Path) -> dict:
    """The tensors upstream computed from the fixture checkpoint (see that folder's README)."""
    return torch.load(upstream_fixture_dir / "yolov5n-trained.parity.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def upstream_seg_fixture_dir() -> Path:
    """Folder with upstream's yolov5n-seg-random.pt and its .parity.pt (``../shared`` beside the repo); skip if
    absent."""
    if not (UPSTREAM_SEG_FIXTURES / "yolov5n-seg-random.pt").is_file():
        pytest.skip(f"upstream segmentation fixtures not found in {UPSTREAM_SEG_FIXTURES}")
    return UPSTREAM_SEG_FIXTURES


@pytest.fixture(scope="session")
def seg_parity(upstream_seg_fixture_dir: Path) -> dict:
    """The tensors upstream computed from the segmentation fixture checkpoint (see that folder's README)."""
    return torch.load(upstream_seg_fixture_dir / "yolov5n-seg-random.parity.pt", map_location="cpu", weights_only=True)


@pytest.fixture(autouse=True)
def _quiet_logger():
    """Keep model summaries out of the test output."""
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    yield
    LOGGER.setLevel(level)
