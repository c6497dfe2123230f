"""feature_visualization: PNG grid + .npy of one layer's output; heads and 1-pixel maps are skipped."""

from __future__ import annotations

import numpy as np
import torch

from utils.plotting.features import feature_visualization


def test_writes_png_and_npy(tmp_path):
    x = torch.arange(2 * 5 * 6 * 7, dtype=torch.float32).view(2, 5, 6, 7)
    file = feature_visualization(x, "models.common.C3", 4, n=3, save_dir=tmp_path / "vis")
    assert file == tmp_path / "vis" / "stage4_C3_features.png"
    assert file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.load(file.with_suffix(".npy")), x[0].numpy())


def test_skips_heads_lists_and_single_pixel_maps(tmp_path):
    assert feature_visualization(torch.zeros(1, 4, 8, 8), "models.yolo.Detect", 24, save_dir=tmp_path) is None
    assert feature_visualization([torch.zeros(1, 4, 8, 8)], "models.common.Concat", 3, save_dir=tmp_path) is None
    assert feature_visualization(torch.zeros(1, 4, 1, 8), "models.common.Conv", 2, save_dir=tmp_path) is None
    assert not any(tmp_path.iterdir())
