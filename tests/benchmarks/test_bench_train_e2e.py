"""The end-to-end training benchmark's log parsing and report (benchmarks/bench_train_e2e.py), on hand-made logs."""

from __future__ import annotations

import argparse
import sys

import pytest

from tests.module_support import import_file


@pytest.fixture(scope="module")
def bench():
    return import_file("benchmarks/bench_train_e2e.py", "bench_train_e2e")


def _log(epochs: int = 2) -> list[tuple[float, str]]:
    """A train.py log at known times: start-up 3 s, model 2 s, scan 1 s, AutoAnchor 0.5 s, labels plot 4 s,
    per epoch 10 s training + 2 s validation + 0.5 s saving, final validation 3 s, finish 1 s."""
    log = [(3.0, "train: weights=, cfg=yolov5n.yaml"), (3.0, "Overriding model.yaml nc=80 with nc=8"),
           (5.0, "optimizer: SGD(lr=0.01) with parameter groups"), (6.0, "AutoAnchor: 5.1 anchors/target"),
           (6.5, "Plotting labels to runs/labels.jpg..."), (10.5, "Starting training for 2 epochs...")]
    t = 10.5
    for epoch in range(epochs):
        log += [(t, "      Epoch    GPU_mem   box_loss"), (t + 5, f"  {epoch}/1  0G  0.1  50%"),
                (t + 10, "                 Class     Images  Instances          P          R      mAP50"),
                (t + 12, "                   all         64        241      0.5      0.4      0.3      0.1")]
        t += 12.5
    log += [(t, "2 epochs completed in 0.01 hours."), (t, "Validating runs/weights/best.pt..."),
            (t + 3, "Results saved to runs/exp"), (t + 4, "EXIT")]
    return log


def test_phase_breakdown_splits_a_log_into_its_phases(bench):
    phases = bench.phase_breakdown(_log())
    expected = {"start-up": 3.0, "model": 2.0, "data scan": 1.0, "AutoAnchor": 0.5, "labels plot": 4.0,
                "train": 20.0, "val": 4.0, "epoch end": 1.0, "final val": 3.0, "finish": 1.0}
    assert phases == pytest.approx(expected)
    assert sum(phases.values()) == pytest.approx(_log()[-1][0])


def test_phase_breakdown_without_optional_markers_merges_them_into_the_previous_phase(bench):
    log = [line for line in _log() if "AutoAnchor" not in line[1] and "Plotting labels" not in line[1]]
    phases = bench.phase_breakdown(log)
    assert phases["AutoAnchor"] == phases["labels plot"] == 0.0
    assert phases["data scan"] == pytest.approx(5.5)
    assert sum(phases.values()) == pytest.approx(log[-1][0])


def test_timestamped_lines_splits_carriage_returns_and_reports_the_exit_code(bench, tmp_path):
    code = "import sys; sys.stdout.write('a\\rb\\nc\\n'); sys.stdout.flush(); sys.exit(3)"
    lines, returncode, cpu = bench.timestamped_lines([sys.executable, "-c", code], env=None, cwd=tmp_path)
    assert [text for _, text in lines] == ["a", "b", "c", "EXIT"]
    assert returncode == 3 and cpu >= 0.0


def test_report_states_the_ratio_against_the_target(bench):
    runs = [bench.Run("ours", 30.0, 50.0, 0, dict.fromkeys(bench.PHASES, 3.0)),
            bench.Run("upstream", 60.0, 100.0, 0, dict.fromkeys(bench.PHASES, 6.0)),
            bench.Run("ours", 32.0, 52.0, 0, dict.fromkeys(bench.PHASES, 3.2)),
            bench.Run("upstream", 58.0, 98.0, 0, dict.fromkeys(bench.PHASES, 5.8))]
    summary = bench.summarize(runs)
    assert summary["ratio"] == pytest.approx(31.0 / 59.0)
    args = argparse.Namespace(cfg="yolov5n.yaml", img=256, batch=16, epochs=3, workers=2, train_images=256,
                              val_images=64, rounds=2)
    report = bench.format_report(summary, args)
    assert "0.53x (meets the <= 0.6x target)" in report


def test_plot_is_written_atomically(bench, tmp_path):
    summary = {"ours": {"phases": dict.fromkeys(bench.PHASES, 1.0)}}
    bench.plot_phases(summary, tmp_path / "phases.png")
    assert [p.name for p in tmp_path.iterdir()] == ["phases.png"]
