"""Tests for utils.autoanchor: label sizes, k-means + GA on known clusters, BPR check and anchor replacement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.autoanchor import anchor_metric, check_anchor_order, check_anchors, kmean_anchors, label_wh

CLUSTERS = np.array([[10, 13], [30, 61], [116, 90], [200, 300], [373, 326]], dtype=float)  # pixels at 640


class _Dataset:
    """Minimal dataset: square 640 images whose labels cluster around given sizes (pixels at 640)."""

    def __init__(self, sizes_px: np.ndarray, n_images: int = 40, per_image: int = 6, jitter: float = 0.03,
                 seed: int = 0):
        rng = np.random.default_rng(seed)
        self.shapes = np.full((n_images, 2), 640.0)
        self.labels = []
        for _ in range(n_images):
            noise = 1 + jitter * rng.standard_normal((per_image, 2))
            wh = sizes_px[rng.integers(0, len(sizes_px), per_image)] * noise
            self.labels.append(np.concatenate([np.zeros((per_image, 1)), np.full((per_image, 2), 0.5), wh / 640], 1))


def test_label_wh_scales_long_side_to_img_size():
    class D:
        shapes = np.array([[1280.0, 640.0], [100.0, 200.0]])
        labels = [np.array([[0, .5, .5, .5, .5]]), np.zeros((0, 5))]

    np.testing.assert_allclose(label_wh(D, 320), [[160.0, 80.0]])
    np.testing.assert_allclose(label_wh(D, 320, scale=np.array([2.0, 1.0])), [[320.0, 160.0]])


def test_kmean_anchors_recovers_known_clusters():
    anchors = kmean_anchors(_Dataset(CLUSTERS), n=5, img_size=640, gen=300, verbose=False,
                            rng=np.random.default_rng(1))
    assert anchors.dtype == np.float32 and anchors.shape == (5, 2)
    assert (np.diff(anchors.prod(1)) > 0).all()  # sorted by area
    np.testing.assert_allclose(anchors, CLUSTERS, rtol=0.06)


def test_kmean_anchors_is_deterministic_for_a_seed():
    dataset = _Dataset(CLUSTERS)
    a = kmean_anchors(dataset, n=5, gen=200, verbose=False, rng=np.random.default_rng(7))
    b = kmean_anchors(dataset, n=5, gen=200, verbose=False, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_kmean_anchors_falls_back_to_random_init_when_too_few_labels():
    dataset = _Dataset(CLUSTERS[:1], n_images=1, per_image=2)
    anchors = kmean_anchors(dataset, n=9, img_size=640, gen=0, verbose=False, rng=np.random.default_rng(0))
    assert anchors.shape == (9, 2) and (anchors >= 0).all() and (anchors <= 640).all()


def test_anchor_metric_ratio():
    x, best = anchor_metric(torch.tensor([[10.0, 10.0], [40.0, 20.0]]), torch.tensor([[20.0, 20.0]]))
    torch.testing.assert_close(x, torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(best, torch.tensor([0.5]))


class _Head(torch.nn.Module):
    def __init__(self, anchors_px: np.ndarray, strides=(8.0, 16.0, 32.0)):
        super().__init__()
        self.stride = torch.tensor(strides)
        anchors = torch.tensor(anchors_px, dtype=torch.float32).view(3, 3, 2)
        self.register_buffer("anchors", anchors / self.stride.view(-1, 1, 1))


class _Model(torch.nn.Module):
    def __init__(self, head):
        super().__init__()
        self.model = torch.nn.ModuleList([head])


def test_check_anchors_keeps_good_anchors(caplog):
    default = np.array([[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198],
                        [373, 326]], dtype=float)
    head = _Head(default)
    before = head.anchors.clone()
    bpr = check_anchors(_Dataset(default), _Model(head), thr=4.0, imgsz=640, rng=np.random.default_rng(0))
    assert bpr == 1.0
    torch.testing.assert_close(head.anchors, before)


@pytest.mark.parametrize("scale", [0.02])
def test_check_anchors_replaces_poor_anchors(scale):
    default = np.array([[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198],
                        [373, 326]], dtype=float)
    head = _Head(default)
    tiny = _Dataset(default * scale + 2.5)  # every object is tiny: 2-10 px, far below the 10x13 anchor / 4
    bpr = check_anchors(tiny, _Model(head), thr=4.0, imgsz=640, rng=np.random.default_rng(0))
    assert bpr > 0.98
    pixels = head.anchors * head.stride.view(-1, 1, 1)
    assert float(pixels.max()) < 40  # replaced by small anchors, stored in grid units
    areas = pixels.prod(-1).mean(-1)
    assert areas[0] <= areas[-1]  # order follows the strides


class _AnchorHead:
    """The two tensors check_anchor_order reads from a head."""

    def __init__(self, anchors: list, stride: list) -> None:
        self.anchors = torch.tensor(anchors, dtype=torch.float32)
        self.stride = torch.tensor(stride, dtype=torch.float32)


def test_check_anchor_order_flips_levels_ordered_against_the_strides():
    small, large = [[10.0, 13.0], [16.0, 30.0]], [[116.0, 90.0], [156.0, 198.0]]
    head = _AnchorHead([large, small], [8.0, 32.0])
    check_anchor_order(head)
    assert head.anchors.tolist() == [small, large]
    check_anchor_order(head)  # already in order: unchanged
    assert head.anchors.tolist() == [small, large]


def test_models_use_the_autoanchor_check():
    from models import yolo

    assert yolo.check_anchor_order is check_anchor_order
