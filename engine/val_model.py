"""The model a validation pass runs: the caller's model, borrowed, or a converted copy of it.

A validator is given models it does not own (the trainer's EMA model, a model a user built). Validation needs eval
mode, and may need fp16 weights (CUDA ``half``) or the precision policy's memory format and packed CPU kernels
(:meth:`utils.precision.PrecisionPolicy.prepare_model`). :func:`borrowed_model` provides that without changing
anything the caller can see afterwards: when the model already has the wanted dtype and layout it is used in
place and only its per-module ``training`` flags are set and restored; otherwise a deep copy is converted.
"""

from __future__ import annotations

import contextlib
import copy
from itertools import chain
from typing import Iterator

import torch
import torch.nn as nn

from utils.precision import PrecisionPolicy


def needs_copy(model: nn.Module, dtype: torch.dtype | None, policy: PrecisionPolicy | None) -> bool:
    """True when running ``model`` in ``dtype`` under ``policy`` would convert it.

    That is: a floating parameter or buffer of another dtype, a 4-D parameter not contiguous in the policy's memory
    format, or a policy that installs packed kernels (CPU bf16 autocast). ``dtype`` None: any dtype will do.
    """
    tensors = chain(model.parameters(), model.buffers())
    if dtype is not None and any(t.is_floating_point() and t.dtype != dtype for t in tensors):
        return True
    if policy is None:
        return False
    if policy.device_type == "cpu" and policy.autocast_dtype == torch.bfloat16:
        return True
    memory_format = torch.channels_last if policy.channels_last else torch.contiguous_format
    return any(p.dim() == 4 and not p.is_contiguous(memory_format=memory_format) for p in model.parameters())


@contextlib.contextmanager
def borrowed_model(model: nn.Module, dtype: torch.dtype | None = torch.float32,
                   policy: PrecisionPolicy | None = None) -> Iterator[nn.Module]:
    """Yield ``model`` in eval mode with floating tensors in ``dtype`` and ``policy``'s layout; leave it as it was.

    When :func:`needs_copy` says so, a deep copy is converted (``dtype``, then ``policy.prepare_model``) and
    yielded; the caller's model is not touched. Otherwise ``model`` itself is yielded and every module's
    ``training`` flag is restored on exit (also when the body raises). Either way the caller keeps its parameter
    values, dtypes, devices, memory formats and modes. Inference-only caches a model fills during a forward
    (the detection head's anchor grids) may be left filled. ``dtype`` and ``policy`` None ask for neither: a model
    that manages its own precision (``DetectMultiBackend``) is then always used in place.
    """
    if needs_copy(model, dtype, policy):
        work = copy.deepcopy(model)
        if dtype is not None:
            work = work.to(dtype=dtype)
        if policy is not None:
            work = policy.prepare_model(work)
        yield work.eval()
        return
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model.eval()
    finally:
        for module, training in modes:
            module.training = training
