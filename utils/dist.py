"""Distributed-training context, read from the environment when asked (never cached at import time).

``torch.distributed.run`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` for each process; a plain
``python train.py`` has none of them, which means a single process: rank -1, local rank -1, world size 1
(upstream's convention, where -1 means "not distributed" and rank 0 or -1 is the main process).
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as torch_dist


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def get_rank() -> int:
    """Return the global rank from ``RANK`` (-1 when not launched by a distributed launcher)."""
    return _env_int("RANK", -1)


def get_local_rank() -> int:
    """Return the node-local rank from ``LOCAL_RANK`` (-1 when not distributed)."""
    return _env_int("LOCAL_RANK", -1)


def get_world_size() -> int:
    """Return the number of processes from ``WORLD_SIZE`` (1 when not distributed)."""
    return max(_env_int("WORLD_SIZE", 1), 1)


def is_main_process() -> bool:
    """Return True for the process that logs, validates and saves (rank 0, or the only process)."""
    return get_rank() in (-1, 0)


def check_batch_split(batch_size: int) -> int:
    """Return the per-process batch of a total ``batch_size`` split over ``WORLD_SIZE`` processes.

    Raises:
        ValueError: ``batch_size`` is not a multiple of ``WORLD_SIZE``.
    """
    world_size = get_world_size()
    if batch_size % world_size:
        raise ValueError(f"--batch-size {batch_size} must be a multiple of WORLD_SIZE={world_size} (the total batch "
                         f"is split evenly across the processes)")
    return batch_size // world_size


@contextlib.contextmanager
def torch_distributed_zero_first(local_rank: int) -> Iterator[None]:
    """Run the body on local rank 0 first while the other ranks wait at a barrier (e.g. building a label cache).

    Ranks other than 0 (and -1) wait before the body; rank 0 reaches the matching barrier after it, also when the
    body raises, so the waiting ranks are released instead of blocking forever (they then run the body
    themselves, and typically fail the same way). A no-op without an initialised process group.
    """
    initialised = torch_dist.is_available() and torch_dist.is_initialized()
    if initialised and local_rank not in (-1, 0):
        torch_dist.barrier()
    try:
        yield
    finally:
        if initialised and local_rank == 0:
            torch_dist.barrier()


def is_distributed() -> bool:
    """Return True when a process group is initialised and has more than one member."""
    return torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1


def init_distributed(device: torch.device | str | None = None, timeout_s: int = 10800) -> torch.device:
    """Initialise the default process group for this process's ``LOCAL_RANK``; returns the device to train on.

    CUDA (``device`` of type cuda, or None with CUDA available): device ``cuda:LOCAL_RANK`` and the NCCL backend
    (Gloo where NCCL is missing). CPU (``device`` cpu, or no CUDA): the Gloo backend. Rendezvous (``MASTER_ADDR``,
    ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``) comes from the environment set by ``torch.distributed.run``.

    Raises:
        RuntimeError: not launched by a distributed launcher (``LOCAL_RANK`` unset), or fewer CUDA devices than
            ``LOCAL_RANK + 1`` on this node.
    """
    local_rank = get_local_rank()
    if local_rank == -1:
        raise RuntimeError("init_distributed() needs LOCAL_RANK; launch with `python -m torch.distributed.run`")
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available() or torch.cuda.device_count() <= local_rank:
            raise RuntimeError(f"LOCAL_RANK={local_rank} needs CUDA device {local_rank}, but "
                               f"{torch.cuda.device_count()} CUDA device(s) are visible: insufficient CUDA devices "
                               f"for this DDP command (lower --nproc_per_node)")
        torch.cuda.set_device(local_rank)
        chosen, backend = torch.device("cuda", local_rank), "nccl" if torch_dist.is_nccl_available() else "gloo"
    elif kind == "cpu":
        chosen, backend = torch.device("cpu"), "gloo"
    else:
        raise RuntimeError(f"DDP training supports CUDA (NCCL) and CPU (Gloo) devices, not {kind!r}")
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return chosen


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.parallel.DistributedDataParallel:
    """Wrap ``model`` for DDP on this rank's ``device`` (CUDA: its index; CPU/Gloo: no device ids), static graph."""
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                     output_device=device_ids[0] if device_ids else None,
                                                     static_graph=True)


def destroy_distributed() -> None:
    """Tear down the default process group if one exists (safe to call in a single process)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def broadcast_from_main(value: Any) -> Any:
    """Return rank 0's ``value`` on every rank (identity when not distributed), e.g. the early-stop flag."""
    if not is_distributed():
        return value
    holder = [value if get_rank() == 0 else None]
    torch_dist.broadcast_object_list(holder, 0)
    return holder[0]
