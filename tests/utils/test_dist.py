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


@pytest.fixture
def fake_barrier(monkeypatch) -> list[str]:
    """An initialised process group whose barrier only records that it was reached."""
    calls: list[str] = []
    monkeypatch.setattr(dist.torch_dist, "is_available", lambda: True)
    monkeypatch.setattr(dist.torch_dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist.torch_dist, "barrier", lambda *a, **k: calls.append("barrier"))
    return calls


def test_zero_first_rank0_releases_the_others_after_the_body(fake_barrier):
    with dist.torch_distributed_zero_first(0):
        fake_barrier.append("body")
    assert fake_barrier == ["body", "barrier"]


def test_zero_first_rank0_releases_the_others_when_the_body_raises(fake_barrier):
    with pytest.raises(ValueError, match="no labels"), dist.torch_distributed_zero_first(0):
        fake_barrier.append("body")
        raise ValueError("no labels")
    assert fake_barrier == ["body", "barrier"]


def test_zero_first_other_ranks_wait_before_the_body(fake_barrier):
    with pytest.raises(RuntimeError), dist.torch_distributed_zero_first(1):
        fake_barrier.append("body")
        raise RuntimeError("boom")
    assert fake_barrier == ["barrier", "body"]  # only one barrier per rank: rank 0's release matches it
    fake_barrier.clear()
    with dist.torch_distributed_zero_first(-1):
        fake_barrier.append("body")
    assert fake_barrier == ["body"]


def test_zero_first_is_a_noop_without_a_process_group():
    with dist.torch_distributed_zero_first(0), dist.torch_distributed_zero_first(3):
        pass


def test_one_zero_first_behind_every_upstream_path():
    from utils import dataloaders, torch_utils
    from utils.data import loaders

    assert torch_utils.torch_distributed_zero_first is dist.torch_distributed_zero_first
    assert dataloaders.torch_distributed_zero_first is dist.torch_distributed_zero_first
    assert loaders.torch_distributed_zero_first is dist.torch_distributed_zero_first
