"""The CUDA check list (benchmarks/cuda_checklist.py) refuses clearly where it cannot run; its parts on CPU."""

from __future__ import annotations

import pytest
import torch

from tests.module_support import import_file


@pytest.fixture(scope="module")
def checklist():
    return import_file("benchmarks/cuda_checklist.py", "cuda_checklist")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU: the check list would run")
def test_without_cuda_it_says_so_and_exits_2(checklist, capsys):
    assert checklist.main(checklist.parse_args(["--skip-throughput"])) == 2
    assert "no CUDA device visible" in capsys.readouterr().out


def test_missing_packages_are_listed_before_anything_runs(checklist, monkeypatch, capsys):
    monkeypatch.setattr(checklist, "NEEDED", ("torch", "no_such_module_xyz"))
    assert checklist.missing_modules() == ["no_such_module_xyz"]
    assert checklist.main(checklist.parse_args([])) == 2
    assert "no_such_module_xyz" in capsys.readouterr().out


def test_train_flags_put_every_run_on_gpu_0_in_its_own_folder(checklist, tmp_path):
    args = checklist.train_args("data.yaml", tmp_path, "amp")
    assert args[args.index("--device") + 1] == "0"
    assert args[args.index("--project") + 1] == str(tmp_path) and args[args.index("--name") + 1] == "amp"
