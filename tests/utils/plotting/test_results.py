"""results.png / evolve.png plotting and the shared CSV helpers."""

from __future__ import annotations

import numpy as np

from utils.plotting.results import format_csv_header, format_csv_row, plot_evolve, plot_results, read_csv_table


def test_csv_helpers_round_trip(tmp_path):
    file = tmp_path / "t.csv"
    file.write_text(format_csv_header(["a", "b/c"]) + "\n" + format_csv_row([1, 0.000123456]) + "\n")
    header, values = read_csv_table(file)
    assert header == ["a", "b/c"] and values.tolist() == [[1.0, 0.00012346]]


def test_plot_results_draws_ten_panels(tmp_path):
    from utils.loggers.csv_logger import RESULTS_KEYS

    rows = [format_csv_row([e, *np.linspace(1, 0.1, 13) / (e + 1)]) for e in range(5)]
    (tmp_path / "results.csv").write_text(format_csv_header(["epoch", *RESULTS_KEYS]) + "\n" + "\n".join(rows))
    out = plot_results(dir=tmp_path)
    assert out == tmp_path / "results.png" and out.stat().st_size > 20_000


def test_plot_evolve_writes_png_beside_csv(tmp_path):
    keys = ["P", "R", "mAP50", "mAP", "b", "o", "c", "lr0", "momentum"]
    rng = np.random.default_rng(0)
    rows = [format_csv_row(rng.random(len(keys))) for _ in range(6)]
    (tmp_path / "evolve.csv").write_text(format_csv_header(keys) + "\n" + "\n".join(rows) + "\n")
    assert plot_evolve(tmp_path / "evolve.csv") == tmp_path / "evolve.png"
    assert (tmp_path / "evolve.png").stat().st_size > 5_000
