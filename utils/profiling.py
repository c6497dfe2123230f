"""Wall-clock timing context manager used by detect.py, AutoShape and the benchmarks (upstream's ``Profile``)."""

from __future__ import annotations

import time
from typing import Union

import torch


class Profile:
    """Accumulating timer: ``with profile: ...`` adds the elapsed seconds to ``.t`` and stores them in ``.dt``.

    Args:
        t: starting total in seconds.
        device: when a CUDA device is given, CUDA is synchronised before each clock read so GPU work is counted.
    """

    def __init__(self, t: float = 0.0, device: Union[str, torch.device] | None = None):
        self.t = t
        self.dt = 0.0
        self.start = 0.0
        self.cuda = device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()

    def __enter__(self) -> Profile:
        self.start = self.time()
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self.dt = self.time() - self.start
        self.t += self.dt

    def time(self) -> float:
        """Return ``time.perf_counter()`` seconds, after a CUDA sync when profiling a CUDA device."""
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()
