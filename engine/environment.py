"""The environment a training run executes in, prepared before the first epoch: the seeds of every random
generator, the CUDA AMP check and AutoBatch. Each function takes explicit arguments (no ``opt``)."""

from __future__ import annotations

import os
import random
from copy import deepcopy
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from utils.logging import LOGGER, colorstr


def init_seeds(seed: int = 0, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); with ``deterministic``, ask torch for deterministic kernels.

    Deterministic mode uses ``warn_only=True`` so an op without a deterministic kernel warns instead of failing,
    and sets ``CUBLAS_WORKSPACE_CONFIG`` / ``PYTHONHASHSEED`` as upstream does (this is a call-time side effect).
    ``torch.use_deterministic_algorithms`` is only called where CUDA is available: the CPU kernels training uses
    are deterministic already, and the call costs about 2 s of start-up on CPU (it imports torch's compiler stack).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        if torch.cuda.is_available():
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        os.environ["PYTHONHASHSEED"] = str(seed)


def check_amp(model: nn.Module, imgsz: int = 256) -> bool:
    """Return True when CUDA automatic mixed precision gives the same detections as fp32 for ``model``.

    CPU and MPS always return False (no fp16 AMP there). On CUDA the model is run in eval mode on a fixed
    synthetic image in fp32 and under autocast; boxes with objectness > 0.25 must agree to 0.1 of the image size
    (upstream's tolerance on normalised xywh). Any failure disables AMP with a warning rather than stopping training.
    """
    prefix = colorstr("AMP: ")
    device = next(model.parameters()).device
    if device.type in ("cpu", "mps"):
        return False
    try:
        probe = deepcopy(model).float().eval()
        image = _amp_probe_image(imgsz, device)
        with torch.no_grad():
            reference = probe(image)[0].float()
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                mixed = probe(image)[0].float()
        keep = reference[..., 4] > 0.25
        agree = torch.allclose(reference[keep][:, :4] / imgsz, mixed[keep][:, :4] / imgsz, atol=0.1)
    except Exception as e:
        LOGGER.warning(f"{prefix}checks skipped ⚠️ ({type(e).__name__}: {e}), disabling Automatic Mixed Precision")
        return False
    if agree:
        LOGGER.info(f"{prefix}checks passed ✅")
        return True
    LOGGER.warning(f"{prefix}checks failed ❌, disabling Automatic Mixed Precision")
    return False


def _amp_probe_image(imgsz: int, device: torch.device) -> torch.Tensor:
    """Return a deterministic (1, 3, imgsz, imgsz) image in [0, 1]: smooth gradients plus a bright square."""
    ramp = torch.linspace(0, 1, imgsz, device=device)
    image = torch.stack((ramp.view(1, -1).expand(imgsz, -1), ramp.view(-1, 1).expand(-1, imgsz),
                         torch.full((imgsz, imgsz), 0.5, device=device)))
    image[:, imgsz // 4: imgsz // 2, imgsz // 4: imgsz // 2] = 1.0
    return image.unsqueeze(0)


def fit_batch_size(batch_sizes: Sequence[int], memory_gb: Sequence[float], free_gb: float, fraction: float = 0.8,
                   default: int = 16) -> int:
    """Return the batch size whose predicted memory is ``fraction`` of the free memory (linear fit), in [1, 1024].

    ``memory_gb[i]`` is the measured memory of ``batch_sizes[i]``; ``free_gb`` the memory available for batches.
    Fits ``memory = slope * batch + intercept`` and solves for the target; an anomalous result returns ``default``.
    """
    pairs = [(b, m) for b, m in zip(batch_sizes, memory_gb, strict=True) if m is not None and np.isfinite(m)]
    if len(pairs) < 2:
        return default
    slope, intercept = np.polyfit([p[0] for p in pairs], [p[1] for p in pairs], deg=1)
    if slope <= 0:
        return default
    batch = int((free_gb * fraction - intercept) / slope)
    return batch if 1 <= batch <= 1024 else default


def check_train_batch_size(model: nn.Module, imgsz: int = 640, amp: bool = True, fraction: float = 0.8,
                           default: int = 16) -> int:
    """AutoBatch (``--batch-size -1``): profile batches 1..16 on CUDA and return the size using ``fraction`` of memory.

    On CPU/MPS (or if profiling fails) returns ``default`` with a warning.
    """
    prefix = colorstr("AutoBatch: ")
    device = next(model.parameters()).device
    if device.type != "cuda":
        LOGGER.warning(f"{prefix}CUDA not detected, using default batch-size {default}")
        return default
    probe = deepcopy(model).train()
    total = torch.cuda.get_device_properties(device).total_memory / 1e9
    free = total - torch.cuda.memory_reserved(device) / 1e9
    sizes, memory = [1, 2, 4, 8, 16], []
    for size in sizes:
        memory.append(_batch_memory_gb(probe, size, imgsz, device, amp))
    batch = fit_batch_size(sizes, memory, free, fraction, default)
    LOGGER.info(f"{prefix}Using batch-size {batch} for {device} ({total:.2f}G total, {free:.2f}G free)")
    return batch


def _batch_memory_gb(model: nn.Module, batch: int, imgsz: int, device: torch.device, amp: bool) -> float | None:
    try:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        images = torch.rand(batch, 3, imgsz, imgsz, device=device)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
            outputs = model(images)
        sum(o.float().sum() for o in outputs).backward()
        model.zero_grad(set_to_none=True)
        return torch.cuda.max_memory_reserved(device) / 1e9
    except RuntimeError as e:  # out of memory at this size: the fit uses the smaller sizes
        LOGGER.debug(f"AutoBatch: batch {batch} failed ({e})")
        return None
