"""One precision policy for training, validation, detection, the autoencoder pretrainer and hub models.

- CUDA: upstream's fp16 automatic mixed precision (the caller keeps its AMP check), NCHW.
- CPU: bf16 autocast when the processor does bf16 natively (AMX or AVX512-BF16, detected at run time) plus
  channels_last memory format; without native bf16, fp32 with channels_last (bf16 emulation is slower than fp32).
- Everywhere: ``force_fp32=True`` (CLI ``--fp32``, env ``YOLOV5_FP32=1``, hub ``model.fp32 = True``) gives plain
  fp32 NCHW, the reference numerics.

Numerics that must stay fp32, and what autocast does to each (checked in tests/utils/test_precision.py):

- parameters, gradients, optimizer state and EMA weights: autocast never changes parameter dtypes (fp32);
- BatchNorm running statistics: batch norm runs in fp32 under autocast, its buffers stay fp32;
- box decoding: ``Detect._decode`` casts each level to its grid's dtype (fp32 unless the model was ``.half()``-ed)
  before the sigmoid, so decoding runs in fp32 and the decoded rows are fp32; the raw per-level outputs are bf16;
- loss and target assignment: in fp32. ``ComputeLoss`` (``casts_to_fp32``) takes the raw bf16 outputs and casts
  what it reads (the positives it gathers, the objectness channel) to fp32 before any arithmetic, so the loss is
  the same as on fp32-cast outputs while the full-size gradient tensors stay bf16; other losses get
  ``float_outputs(pred)`` (the trainer decides);
- NMS and metrics: run on ``float_outputs(pred)``, outside the autocast region.

Checkpoints are written by ``utils.checkpoint.make_checkpoint`` (fp16 copies) whatever the training precision.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn as nn

from utils.cpu_fast import install_packed_convs, onednn_bf16_supported, remove_packed_convs
from utils.logging import LOGGER

BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """Return the feature flags of the first processor listed in ``cpuinfo`` (empty when unreadable, e.g. macOS)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Return True when this CPU executes bf16 matrix work natively (AMX-BF16 or AVX512-BF16) and oneDNN can use it."""
    return bool(BF16_CPU_FLAGS & cpu_flags()) and onednn_bf16_supported()


def float_outputs(outputs: Any) -> Any:
    """Return ``outputs`` with every floating-point tensor cast to float32, keeping list/tuple nesting.

    Model outputs produced under bf16/fp16 autocast (the raw per-level head tensors; a head may also return low
    precision decoded rows) must be cast before the loss, NMS or metrics: e.g. ``ComputeLoss`` on raw bf16 outputs
    computes the objectness BCE in bf16 and is off by several percent.
    """
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, list):
        return [float_outputs(x) for x in outputs]
    if isinstance(outputs, tuple):
        return tuple(float_outputs(x) for x in outputs)
    return outputs


@dataclass(frozen=True)
class PrecisionPolicy:
    """Which autocast dtype and memory format to use on ``device_type``, and why."""

    device_type: str
    autocast_dtype: torch.dtype | None
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
        """Prepare ``model`` in place for this policy and return it.

        Moves the 4-D weights to the chosen memory format (channels_last or NCHW). Under the CPU bf16 policy, the
        convolutions the model's modules offer (``packable_convs()``: fused ``Conv`` layers and head outputs of
        inference models) also get packed bf16 kernels with the activation fused
        (``utils.cpu_fast.install_packed_convs``); any other policy removes them again.
        """
        model = model.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        if self.device_type == "cpu" and self.autocast_dtype == torch.bfloat16:
            count = install_packed_convs(model)
            if count:
                LOGGER.info(f"CPU fast path: {count} convolutions run packed bf16 kernels (activations fused)")
        else:
            remove_packed_convs(model)
        return model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Return the input batch in the chosen memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x


FORCED_FP32_REASON = "fp32 forced (--fp32 / YOLOV5_FP32)"


def env_forces_fp32() -> bool:
    """Return True when the environment variable ``YOLOV5_FP32`` asks for fp32."""
    return os.environ.get("YOLOV5_FP32", "").strip().lower() in ("1", "true", "yes")


def select_precision(device: torch.device | str, force_fp32: bool = False, cuda_amp: bool = True,
                     log: bool = True) -> PrecisionPolicy:
    """Return the precision policy for ``device`` (see the module docstring) and log the choice with its reason."""
    device_type = torch.device(device).type
    if force_fp32 or env_forces_fp32():
        policy = PrecisionPolicy(device_type, None, False, FORCED_FP32_REASON)
    elif device_type == "cuda":
        policy = (PrecisionPolicy("cuda", torch.float16, False, "CUDA automatic mixed precision")
                  if cuda_amp else PrecisionPolicy("cuda", None, False, "CUDA AMP check failed or disabled"))
    elif device_type == "cpu" and cpu_has_native_bf16():
        policy = PrecisionPolicy("cpu", torch.bfloat16, True, "CPU has native bf16 (AMX/AVX512-BF16)")
    elif device_type == "cpu":
        policy = PrecisionPolicy("cpu", None, True, "no native bf16 on this CPU; channels_last fp32")
    else:
        policy = PrecisionPolicy(device_type, None, False, f"{device_type}: fp32")
    return _logged(policy, log)


def _logged(policy: PrecisionPolicy, log: bool) -> PrecisionPolicy:
    """Log ``precision: <name> (<reason>)`` when ``log``; returns ``policy``."""
    if log:
        LOGGER.info(f"precision: {policy.name} ({policy.reason})")
    return policy


def inference_precision(device: torch.device | str, force_fp32: bool = False, log: bool = True) -> PrecisionPolicy:
    """Return the policy for inference (val.py, detect.py, DetectMultiBackend ``.pt``, hub models).

    CPU: :func:`select_precision`'s choice. Other devices: fp32 NCHW as upstream (CUDA fp16 inference is upstream's
    explicit ``--half``, which converts the weights instead of using autocast).
    """
    device_type = torch.device(device).type
    if device_type == "cpu":
        return select_precision(device, force_fp32=force_fp32, log=log)
    reason = FORCED_FP32_REASON if force_fp32 or env_forces_fp32() else \
        f"{device_type} inference: fp32, or fp16 weights with --half (upstream)"
    return _logged(PrecisionPolicy(device_type, None, False, reason), log)


class InferencePrecision:
    """Follow a model's ``fp32`` switch: (re)select the inference policy when the switch, the device or
    ``YOLOV5_FP32`` changes, move the model to that policy's memory format and log the choice (once per change).

    A model object not prepared yet (e.g. a deep copy, which carries no packed kernels) is prepared on its first
    :meth:`update`.
    """

    def __init__(self) -> None:
        self.policy: PrecisionPolicy | None = None
        self._key: tuple | None = None
        self._prepared: weakref.ref | None = None

    def update(self, model: nn.Module, device: torch.device | str, force_fp32: bool = False) -> PrecisionPolicy:
        """Return the policy for ``device`` and ``force_fp32``, preparing ``model`` when either changed."""
        key = (str(torch.device(device)), bool(force_fp32), env_forces_fp32())
        if key != self._key or self.policy is None:
            self.policy = inference_precision(device, force_fp32=force_fp32)
            self._key, self._prepared = key, None
        if self._prepared is None or self._prepared() is not model:
            self.policy.prepare_model(model)
            self._prepared = weakref.ref(model)
        return self.policy

    def __getstate__(self) -> dict:
        """Pickle state without the (unpicklable) reference to the prepared model."""
        return {**self.__dict__, "_prepared": None}
