"""The main job's defaults stated in README.md are the ones ``python train.py`` (no arguments) uses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import train
from engine.train_options import TrainOptions, prepare_new_run

ROOT = Path(__file__).resolve().parents[2]
MARKER = "Defaults of `python train.py`:"


def readme_defaults() -> dict[str, str]:
    """Parse the README line ``Defaults of `python train.py`: `--flag value ...``` into {flag: value}."""
    lines = [line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines() if MARKER in line]
    assert len(lines) == 1, f"README.md needs exactly one line with {MARKER!r}"
    command = re.search(r"`(--[^`]+)`", lines[0].split(MARKER, 1)[1]).group(1)
    words = shlex.split(command)
    return dict(zip(words[::2], words[1::2], strict=True))


def test_readme_states_the_default_options(tmp_path):
    stated = readme_defaults()
    parsed = train.build_parser().parse_args(["--project", str(tmp_path)])
    options = prepare_new_run(TrainOptions.from_namespace(parsed))
    actual = {
        "--cfg": Path(options.cfg).name,
        "--data": Path(options.data).relative_to(ROOT).as_posix(),
        "--hyp": Path(options.hyp).relative_to(ROOT).as_posix(),
        "--optimizer": options.optimizer,
        "--epochs": str(options.epochs),
        "--img": str(options.imgsz),
        "--batch-size": str(options.batch_size),
        "--backbone-weights": Path(options.backbone_weights).relative_to(ROOT).as_posix(),
        "--freeze": " ".join(map(str, options.freeze)),
    }
    assert stated == actual
