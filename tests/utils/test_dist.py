"""Distributed context is read from the environment at call time."""

from __future__ import annotations

import pytest

from utils import dist


def test_single_process_defaults(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert (dist.get_rank(), dist.get_local_rank(), dist.get_world_size()) == (-1, -1, 1)
    assert dist.is_main_process() and not dist.is_distributed()
    assert dist.broadcast_from_main([1, 2]) == [1, 2]
    dist.destroy_distributed()  # a no-op without a process group


def test_values_follow_the_environment_when_called(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (dist.get_rank(), dist.get_local_rank(), dist.get_world_size()) == (3, 1, 4)
    assert not dist.is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert dist.is_main_process()


def test_bad_values_and_missing_launcher_fail_clearly(monkeypatch):
    monkeypatch.setenv("RANK", "zero")
    with pytest.raises(ValueError, match="RANK='zero' is not an integer"):
        dist.get_rank()
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(RuntimeError, match="needs LOCAL_RANK"):
        dist.init_distributed()
