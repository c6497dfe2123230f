"""One precision policy for training, validation, detection, the autoencoder pretrainer and hub models.

- CUDA: upstream's fp16 automatic mixed precision (the caller keeps its AMP check), NCHW.
- CPU: bf16 autocast when the processor does bf16 natively (AMX or AVX512-BF16, detected at run time) plus
  channels_last memory format; without native bf16, fp32 with channels_last (bf16 emulation is slower than fp32).
- Everywhere: ``force_fp32=True`` (CLI ``--fp32``, env ``YOLOV5_FP32=1``, hub ``model.fp32 = True``) gives plain
  fp32 NCHW, the reference numerics.

Numerics that must stay fp32 are computed outside the autocast region by the callers: loss and target assignment,
NMS, metrics, EMA weights and optimizer state (parameters stay fp32 under autocast), BatchNorm statistics (autocast
runs batch norm in fp32), box decoding (``Detect`` output is cast back with ``.float()``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import torch
import torch.nn as nn

from utils.logging import LOGGER


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Return True when this CPU executes bf16 matrix work natively (AMX-BF16 or AVX512-BF16) and oneDNN can use it."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        return False
    if not ({"amx_bf16", "avx512_bf16"} & flags):
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class PrecisionPolicy:
    """Which autocast dtype and memory format to use on ``device_type``, and why."""

    device_type: str
    autocast_dtype: Optional[torch.dtype]
    channels_last: bool
    reason: str

    @property
    def name(self) -> str:
        """Short label such as ``bf16+channels_last`` or ``fp32``."""
        dtype = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[self.autocast_dtype]
        return dtype + ("+channels_last" if self.channels_last else "")

    @property
    def amp(self) -> bool:
        """True when some mixed precision is used."""
        return self.autocast_dtype is not None

    def autocast(self, enabled: bool = True) -> contextlib.AbstractContextManager:
        """Return the autocast context for forward passes (a no-op context for fp32)."""
        if self.autocast_dtype is None or not enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move the model's 4-D weights to the chosen memory format (in place); returns the model."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Return the input batch in the chosen memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x


def env_forces_fp32() -> bool:
    """Return True when the environment variable ``YOLOV5_FP32`` asks for fp32."""
    return os.environ.get("YOLOV5_FP32", "").strip().lower() in ("1", "true", "yes")


def select_precision(device: torch.device | str, force_fp32: bool = False, cuda_amp: bool = True,
                     log: bool = True) -> PrecisionPolicy:
    """Return the precision policy for ``device`` (see the module docstring) and log the choice with its reason."""
    device_type = torch.device(device).type
    if force_fp32 or env_forces_fp32():
        policy = PrecisionPolicy(device_type, None, False, "fp32 forced (--fp32 / YOLOV5_FP32)")
    elif device_type == "cuda":
        policy = (PrecisionPolicy("cuda", torch.float16, False, "CUDA automatic mixed precision")
                  if cuda_amp else PrecisionPolicy("cuda", None, False, "CUDA AMP check failed or disabled"))
    elif device_type == "cpu" and cpu_has_native_bf16():
        policy = PrecisionPolicy("cpu", torch.bfloat16, True, "CPU has native bf16 (AMX/AVX512-BF16)")
    elif device_type == "cpu":
        policy = PrecisionPolicy("cpu", None, True, "no native bf16 on this CPU; channels_last fp32")
    else:
        policy = PrecisionPolicy(device_type, None, False, f"{device_type}: fp32")
    if log:
        LOGGER.info(f"precision: {policy.name} ({policy.reason})")
    return policy
