"""``AutoShapeClassify``: the torch.hub wrapper of classification models (images in, class probabilities out), and
its ``Classifications`` results. Nothing here downloads: http(s) inputs are refused with a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from models.autoshape import load_image_input
from utils.data.classify_augment import classify_transforms
from utils.logging import LOGGER
from utils.plotting.classify import top5_text
from utils.profiling import Profile
from utils.torch_utils import smart_inference_mode

DEFAULT_SIZE = 224


def model_input_size(model: nn.Module, default: int = DEFAULT_SIZE) -> int:
    """The image size a classifier was trained at (from its pickled ``transforms``), else ``default``."""
    inner = getattr(model, "model", model)
    for transform in getattr(getattr(inner, "transforms", None), "transforms", []):
        if hasattr(transform, "h"):
            return int(transform.h)
    return default


class Classifications:
    """Class probabilities of a batch of images.

    Attributes:
        ims: the input images (HWC RGB uint8). files: their names. probs: (n, nc) float tensor, rows sum to 1.
        names: {class id: name}. t: (pre-process, inference, softmax) ms per image.
    """

    def __init__(self, ims: list[np.ndarray], files: list[str], probs: torch.Tensor, names: dict, times: Sequence):
        self.ims, self.files, self.probs, self.names = ims, files, probs, names
        self.t = tuple(t.t / max(len(ims), 1) * 1e3 for t in times)

    def __len__(self) -> int:
        return len(self.files)

    def top5(self, i: int = 0) -> list[tuple[int, str, float]]:
        """``[(class id, name, probability), ...]`` of the five most probable classes of image ``i``."""
        values, indices = self.probs[i].topk(min(5, self.probs.shape[1]))
        return [(int(j), self.names.get(int(j), str(int(j))), float(v))
                for v, j in zip(values.tolist(), indices.tolist(), strict=True)]

    def pandas(self) -> list:
        """One DataFrame per image: the top-5 rows ``class, name, confidence``, most probable first."""
        import pandas as pd

        return [pd.DataFrame(self.top5(i), columns=["class", "name", "confidence"]) for i in range(len(self))]

    def tolist(self) -> list[dict]:
        """Per image ``{'file', 'probs' (nc,) list, 'top5'}``."""
        return [{"file": f, "probs": self.probs[i].tolist(), "top5": self.top5(i)} for i, f in enumerate(self.files)]

    def __str__(self) -> str:
        lines = [f"image {i + 1}/{len(self)} {f}: {', '.join(top5_text(self.probs[i], self.names))}"
                 for i, f in enumerate(self.files)]
        pre, inference, post = self.t
        lines.append(f"Speed: {pre:.1f}ms pre-process, {inference:.1f}ms inference, {post:.1f}ms softmax per image")
        return "\n".join(lines)

    def print(self) -> None:
        """Log the top-5 classes of every image and the speed."""
        LOGGER.info(str(self))


class AutoShapeClassify(nn.Module):
    """Wrap a classifier (a ``DetectMultiBackend`` or a module) so it takes paths, PIL images, numpy arrays (HWC
    RGB) or lists of these and returns :class:`Classifications`; a ready (B, 3, H, W) normalised tensor gives the
    (B, nc) probabilities directly. Inputs are centre-cropped to ``size`` (default: the training size)."""

    def __init__(self, model: nn.Module, verbose: bool = True):
        super().__init__()
        if verbose:
            LOGGER.info("Adding AutoShapeClassify... ")
        self.model = model.eval()
        names = getattr(model, "names", None)
        names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names or {})
        self.names, self.size = names, model_input_size(model)

    def _device(self) -> torch.device:
        device = getattr(self.model, "device", None)
        return torch.device(device) if device is not None else next(self.model.parameters()).device

    @smart_inference_mode()
    def forward(self, ims: Any, size: int | None = None) -> Any:
        """Classify ``ims`` (see the class docstring); ``size`` overrides the centre-crop size."""
        device = self._device()
        if isinstance(ims, torch.Tensor):
            return torch.softmax(self.model(ims.to(device)).float(), 1)
        times = (Profile(device=device), Profile(device=device), Profile(device=device))
        items = list(ims) if isinstance(ims, (list, tuple)) else [ims]
        with times[0]:
            loaded = [load_image_input(im, i) for i, im in enumerate(items)]
            transform = classify_transforms(int(size or self.size))
            x = torch.stack([transform(np.ascontiguousarray(rgb[..., ::-1])) for rgb, _ in loaded]).to(device)
        with times[1]:
            logits = self.model(x)
        with times[2]:
            probs = torch.softmax((logits[0] if isinstance(logits, (list, tuple)) else logits).float(), 1).cpu()
        files = [Path(name).name for _, name in loaded]
        return Classifications([rgb for rgb, _ in loaded], files, probs, self.names, times)
