"""Upstream import path ``utils.segment.augmentations``: the augmentations that carry polygons (``mixup`` and
``random_perspective`` return the polygons too), implemented in :mod:`utils.data.augment`."""

from utils.data.augment import box_candidates
from utils.data.augment import mixup_with_segments as mixup
from utils.data.augment import random_perspective_with_segments as random_perspective

__all__ = ["box_candidates", "mixup", "random_perspective"]
