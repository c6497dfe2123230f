"""Fixtures for the extension tests."""

from __future__ import annotations

import pytest
import yaml

from extensions.autoencoder.model import load_cfg


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> str:
    """yolov5n at 1/8 width as a YAML file (the CLIs take a path)."""
    cfg = load_cfg("yolov5n.yaml")
    cfg["width_multiple"] = 0.125
    path = tmp_path_factory.mktemp("cfg") / "tiny5n.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)
