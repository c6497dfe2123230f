"""``python models/yolo.py`` CLI: layer table, summary lines and profiling, run from another working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "models" / "yolo.py"


def _run(tmp_path: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout + result.stderr


def test_cfg_prints_layer_table_and_summaries(tmp_path):
    out = _run(tmp_path, "--cfg", "yolov5n.yaml", "--device", "cpu")
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["from", "n", "params", "module", "arguments"])
    assert lines[header + 1].split()[:5] == ["0", "-1", "1", "1760", "models.common.Conv"]
    assert lines[header + 25].split()[:5] == ["24", "[17,", "20,", "23]", "1"]
    assert "YOLOv5n summary: 214 layers, 1872157 parameters, 1872157 gradients, 4.6 GFLOPs" in out
    assert "Fusing layers" in out and "YOLOv5n summary: 157 layers, 1867405 parameters" in out
    assert not list(tmp_path.iterdir())  # nothing written to the working directory


def test_line_profile(tmp_path):
    out = _run(tmp_path, "--cfg", "yolov5n.yaml", "--line-profile", "--imgsz", "64")
    table = out[out.index("time (ms)"):].splitlines()
    assert table[0].split() == ["time", "(ms)", "GFLOPs", "params", "module"]
    assert table[1].split()[2:] == ["1760", "models.common.Conv"] and table[25].split()[-1] == "models.yolo.Detect"
    assert table[26].split()[-1] == "Total"


def test_profile(tmp_path):
    out = _run(tmp_path, "--cfg", "yolov3-tiny.yaml", "--profile", "--imgsz", "64")
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if "forward (ms)" in line)
    assert "backward (ms)" in lines[header]
    assert lines[header + 1].split()[0] == "8852366"  # parameters of yolov3-tiny
