"""The pretraining study (benchmarks/bench_pretraining.py): labelled subsets, per-arm statistics, the verdict and
the plot on hand-made results; a tiny end-to-end study (slow)."""

from __future__ import annotations

import math

import pytest

from tests.module_support import import_file


@pytest.fixture(scope="module")
def bench():
    return import_file("benchmarks/bench_pretraining.py", "bench_pretraining")


def test_labelled_subset_is_fixed_per_seed_and_sized(bench):
    images = [f"img{i:03d}.jpg" for i in range(400)]
    a, b = bench.labelled_subset(images, 0.1, 0), bench.labelled_subset(images, 0.1, 0)
    assert a == b and len(a) == 40 == len(set(a)) and a == sorted(a)
    assert bench.labelled_subset(images, 0.1, 1) != a
    assert len(bench.labelled_subset(images[:5], 0.01, 0)) == 1


def _run(arm: str, seed: int, map50: float, seconds: float = 600.0, pretrain: float = 0.0) -> dict:
    return {"arm": arm, "seed": seed, "mAP50": map50, "mAP50_95": map50 / 2, "P": 0.5, "R": 0.5,
            "seconds": seconds, "pretrain_seconds": pretrain, "transferred": "165/165" if pretrain else ""}


def _runs() -> list[dict]:
    return ([_run("scratch", s, v) for s, v in enumerate((0.10, 0.12, 0.11))]
            + [_run("cls_full", s, v, pretrain=1200) for s, v in enumerate((0.20, 0.21, 0.23))]
            + [_run("ae_skips_full", s, v, pretrain=900) for s, v in enumerate((0.09, 0.14, 0.10))])


def test_summary_differences_and_verdict(bench):
    summary = bench.arm_summary(_runs())
    assert list(summary) == ["scratch", "cls_full", "ae_skips_full"]
    assert summary["cls_full"]["pretrain_minutes"] == 20.0 and summary["scratch"]["det_minutes"] == 10.0
    mean, low, high, n = bench.difference(summary, "cls_full", "scratch", "map50")
    assert n == 3 and mean == pytest.approx(0.1033333, abs=1e-6)
    diffs = (0.10, 0.09, 0.12)  # per seed: cls_full - scratch
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    half = 4.302653 * sd / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert (low, high) == (pytest.approx(mean - half, abs=1e-6), pytest.approx(mean + half, abs=1e-6)) and low > 0
    text = bench.verdict(summary)
    assert "Routes with a mAP50 gain whose 95 % interval excludes zero: cls_full (+0.1033 mAP50" in text
    assert "ae_skips_full" in text and "ae_skips_full (+" not in text.split("excludes zero:")[1]
    assert bench.difference(summary, "cls_full", "convnext_scratch", "map50") is None


def test_plot_and_tables(bench, tmp_path):
    bench.save_plot(bench.arm_summary(_runs()), tmp_path / "study.png", "test")
    assert (tmp_path / "study.png").stat().st_size > 10_000
    for run in _runs():
        folder = tmp_path / f"det_{run['arm']}_s{run['seed']}"
        folder.mkdir()
        bench.write_json_atomic(folder / "result.json", {"kind": "det", "name": folder.name, **run})
    bench.write_tables([], tmp_path)
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0].startswith("arm,seed,mAP50") and len(lines) == 10 and lines[1].startswith("scratch,0,0.10000")


@pytest.mark.slow
def test_quick_study_end_to_end(bench, tmp_path, tiny_data):
    bench.main(["--quick", "--project", str(tmp_path), "--plot", str(tmp_path / "p.png"), "--det-data", tiny_data,
                "--arms", "scratch", "cls_full", "--seeds", "0", "1", "--labels", "0.5", "--jobs", "2"])
    runs, pretraining = bench.finished_runs(tmp_path)
    assert sorted((r["arm"], r["seed"]) for r in runs) == [("cls_full", 0), ("cls_full", 1), ("scratch", 0),
                                                            ("scratch", 1)]
    assert all(r["transferred"] == "165/165" for r in runs if r["arm"] == "cls_full")
    assert set(pretraining) == {"pre_cls_yolov5n"} and (tmp_path / "p.png").is_file()
    assert "Routes with a mAP50 gain" in (tmp_path / "verdict.md").read_text()
