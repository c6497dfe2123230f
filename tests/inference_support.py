"""Shared helpers for the inference tests: a small model with image-dependent outputs, images and a video.

A freshly initialised yolov5n has vanishing activations (every image gives the same, tied confidences), which
would make ordering-sensitive comparisons meaningless. ``calibrated_yolov5n`` fixes that deterministically: the
BatchNorm running statistics are set from one batch of noise (so every layer is unit-variance in eval mode) and
the head biases are zeroed, which gives spread-out, content-dependent confidences.
"""

from __future__ import annotations

import functools
from copy import deepcopy
from pathlib import Path

import cv2
import numpy as np
import torch

from models.yolo import Model
from utils.checkpoint import make_checkpoint, save_checkpoint

NAMES = {0: "circle", 1: "square", 2: "triangle"}


def calibrated_yolov5n(nc: int = 3, seed: int = 0) -> Model:
    """Return an eval-mode yolov5n (``nc`` classes, names from NAMES) with calibrated BatchNorm statistics."""
    return deepcopy(_calibrated_yolov5n(nc, seed))


@functools.cache
def _calibrated_yolov5n(nc: int, seed: int) -> Model:
    torch.manual_seed(seed)
    model = Model("yolov5n.yaml", nc=nc)
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.momentum = None  # cumulative average: one forward pass sets the running stats to the batch stats
            bn.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(seed)))
    for conv in model.model[-1].m:
        conv.bias.data.zero_()
    model.names = {i: NAMES.get(i, f"class{i}") for i in range(nc)}
    return model.eval()


def write_checkpoint(file: Path, model: torch.nn.Module) -> Path:
    """Save ``model`` in upstream's checkpoint format (fp16 model in a dict) and return the path."""
    save_checkpoint(make_checkpoint(model), file)
    return file


def draw_scene(height: int, width: int, shift: int = 0) -> np.ndarray:
    """Return a BGR uint8 test image: a filled rectangle and circle on a flat background, moved by ``shift``."""
    im = np.full((height, width, 3), (60, 120, 40), np.uint8)
    cv2.rectangle(im, (4 + shift, 6), (width // 2 + shift, height * 2 // 3), (30, 30, 220), -1)
    cv2.circle(im, (width * 3 // 4, height // 2), max(height // 5, 3), (230, 40, 20), -1)
    return im


def write_video(file: Path, frames: int = 6, height: int = 64, width: int = 80, fps: float = 10.0) -> Path:
    """Write a short mp4v video of a moving scene and return its path."""
    writer = cv2.VideoWriter(str(file), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for i in range(frames):
        writer.write(draw_scene(height, width, shift=3 * i))
    writer.release()
    return file
