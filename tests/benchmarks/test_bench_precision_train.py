"""The accuracy guard's statistics and plot (benchmarks/bench_precision_train.py), on hand-made runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.module_support import import_file


@pytest.fixture(scope="module")
def bench():
    return import_file("benchmarks/bench_precision_train.py", "bench_precision_train")


def _run(mode: str, seed: int, final: float, seconds: float = 60.0) -> dict:
    epochs = np.arange(3, dtype=float)
    curve = np.array([0.0, final / 2, final])
    return {"mode": mode, "seed": seed, "seconds": seconds,
            "results": {"epoch": epochs, "metrics/mAP_0.5": curve, "metrics/mAP_0.5:0.95": curve / 2}}


def test_paired_interval_is_the_student_t_interval(bench):
    low, high, error = bench.paired_interval([0.0, 0.01, 0.02])
    assert error == pytest.approx(0.01 / math.sqrt(3))
    half = 4.302653 * 0.01 / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert (low, high) == (pytest.approx(0.01 - half, abs=1e-6), pytest.approx(0.01 + half, abs=1e-6))


def test_verdict_separates_a_mean_inside_the_target_from_an_interval_inside_it(bench):
    noisy = [_run("fp32", 0, 0.36), _run("fast", 0, 0.33), _run("fp32", 1, 0.42), _run("fast", 1, 0.42),
             _run("fp32", 2, 0.37), _run("fast", 2, 0.41)]
    text = bench.verdict(noisy)
    assert "fast - fp32 = +0.0033" in text and ": OK" in text
    assert "cannot confirm it" in text
    steady = [_run(mode, seed, 0.40 + 0.001 * seed * (mode == "fast")) for seed in range(4) for mode in bench.MODES]
    text = bench.verdict(steady)
    assert "inside the target" in text and "cannot confirm" not in text


def test_verdict_flags_a_mean_outside_the_target(bench):
    runs = [_run("fp32", 0, 0.40), _run("fast", 0, 0.37)]
    text = bench.verdict(runs)
    assert "OUTSIDE TARGET" in text
    assert "standard error" not in text  # one seed: no interval


def test_plot_is_written_atomically(bench, tmp_path):
    runs = [_run(mode, seed, 0.3 + 0.01 * seed) for seed in range(2) for mode in bench.MODES]
    file = tmp_path / "plots" / "map.png"
    bench.save_plot(runs, file, "test")
    assert file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in file.parent.iterdir()] == ["map.png"]
