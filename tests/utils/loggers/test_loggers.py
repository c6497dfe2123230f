"""Loggers: CSV always, TensorBoard when installed, Comet (real comet_ml SDK, offline) when configured; never fatal."""

from __future__ import annotations

import json
import logging
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from utils.callbacks import Callbacks
from utils.loggers import HOOKS, Loggers
from utils.loggers import comet as comet_module
from utils.loggers.comet import CometSettings, comet_configured, read_experiment_key
from utils.loggers.comet_media import native_boxes, per_class_metrics
from utils.loggers.csv_logger import RESULTS_KEYS
from utils.loggers.tensorboard import tensorboard_available
from utils.logging import LOGGER
from utils.plotting.results import read_csv_table

COMET_ENV = ("COMET_API_KEY", "COMET_MODE", "COMET_CONFIG", "COMET_OFFLINE_DIRECTORY", "COMET_PROJECT_NAME",
             "COMET_LOG_BATCH_METRICS", "COMET_UPLOAD_BATCH_METRICS", "COMET_BATCH_LOGGING_INTERVAL",
             "COMET_LOG_PREDICTIONS", "COMET_MAX_IMAGE_UPLOADS", "COMET_LOG_PER_CLASS_METRICS",
             "COMET_LOG_CONFUSION_MATRIX", "COMET_MODEL_NAME", "COMET_DEFAULT_CHECKPOINT_FILENAME", "CONF_THRES",
             "IOU_THRES")


def comet_archive_metrics(zip_file: Path) -> dict[int, dict[str, float]]:
    """``{epoch: {metric name: value}}`` of the metric lines in an offline archive's ``messages.json``."""
    with zipfile.ZipFile(zip_file) as archive:
        lines = archive.read("messages.json").decode().splitlines()
    metrics: dict[int, dict[str, float]] = {}
    for line in lines:
        message = json.loads(line)
        if message["type"] == "metric_msg":
            metric = message["payload"]["metric"]
            if metric["epoch"] is not None and "/" in metric["metricName"]:
                metrics.setdefault(metric["epoch"], {})[metric["metricName"]] = metric["metricValue"]
    return metrics


def csv_by_epoch(file: Path) -> dict[int, dict[str, float]]:
    header, values = read_csv_table(file)
    return {int(row[0]): dict(zip(header[1:], row[1:].tolist(), strict=True)) for row in values}


def assert_same_metrics(logged: dict[int, dict[str, float]], table: dict[int, dict[str, float]]) -> None:
    """Same epochs, same metric names (the ``results.csv`` columns) and values equal to the CSV's 5 digits."""
    assert sorted(logged) == sorted(table)
    for epoch, row in table.items():
        assert sorted(logged[epoch]) == sorted(RESULTS_KEYS) == sorted(row)
        assert [logged[epoch][k] for k in RESULTS_KEYS] == pytest.approx([row[k] for k in RESULTS_KEYS], rel=1e-4,
                                                                         abs=1e-12)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No Comet configuration from the machine: no env vars, no config files."""
    for name in COMET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(comet_module, "CONFIG_FILES", (tmp_path / "absent.config",))
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")  # the SDK's own crash reporting needs network
    return monkeypatch


@pytest.fixture
def warnings_seen():
    lines: list[str] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: lines.append(record.getMessage())
    LOGGER.addHandler(handler)
    yield lines
    LOGGER.removeHandler(handler)


def make_opt(save_dir: Path, **overrides) -> SimpleNamespace:
    options = dict(save_dir=str(save_dir), imgsz=64, sync_bn=False, resume=False, noplots=True, evolve=None, epochs=2,
                   save_period=-1, bbox_interval=-1, name="exp", data="")
    return SimpleNamespace(**{**options, **overrides})


def epoch_values(epoch: int) -> list[float]:
    return [round(0.1 * epoch + 0.01 * i + 0.001, 6) for i in range(len(RESULTS_KEYS))]


def drive_epochs(callbacks: Callbacks, epochs: int, start: int = 0) -> None:
    """Call the hooks a 1-image-per-batch training would call, with known metric values."""
    image = torch.zeros(1, 3, 64, 64)
    targets = torch.tensor([[0.0, 1.0, 32.0, 32.0, 16.0, 16.0]])
    detections = [torch.tensor([[20.0, 20.0, 44.0, 44.0, 0.9, 1.0], [0.0, 0.0, 8.0, 8.0, 0.0005, 0.0]])]
    callbacks.run("on_pretrain_routine_end", np.array([[1, 0.5, 0.5, 0.25, 0.25]]), {0: "circle", 1: "square"})
    callbacks.run("on_train_start")
    for epoch in range(start, start + epochs):
        callbacks.run("on_train_batch_end", torch.nn.Identity(), epoch, image, targets, ["a.jpg"], [0.5, 0.4, 0.3])
        callbacks.run("on_train_epoch_end", epoch)
        callbacks.run("on_val_batch_end", 0, image, targets.clone(), [str(Path(__file__))], None, detections)
        callbacks.run("on_fit_epoch_end", epoch_values(epoch), epoch, 0.5, 0.5)


# ------------------------------------------------------------------------------------------------------- settings
def test_comet_settings_defaults_and_upstream_env_names():
    assert CometSettings.from_env({}) == CometSettings()
    defaults = CometSettings()
    assert (defaults.mode, defaults.model_name, defaults.max_image_uploads, defaults.batch_logging_interval) == \
        ("online", "yolov5", 100, 1)
    assert defaults.log_predictions and defaults.log_confusion_matrix and not defaults.log_per_class_metrics
    settings = CometSettings.from_env({
        "COMET_MODE": "OFFLINE", "COMET_PROJECT_NAME": "p", "COMET_OFFLINE_DIRECTORY": "/x", "COMET_MODEL_NAME": "m",
        "COMET_UPLOAD_BATCH_METRICS": "true", "COMET_BATCH_LOGGING_INTERVAL": "5", "COMET_LOG_CONFUSION_MATRIX": "0",
        "COMET_LOG_PREDICTIONS": "false", "COMET_MAX_IMAGE_UPLOADS": "7", "COMET_LOG_PER_CLASS_METRICS": "yes",
        "COMET_DEFAULT_CHECKPOINT_FILENAME": "best.pt", "CONF_THRES": "0.25", "IOU_THRES": "0.5"})
    assert settings == CometSettings(mode="offline", project_name="p", offline_directory="/x", model_name="m",
                                     log_batch_metrics=True, batch_logging_interval=5, log_confusion_matrix=False,
                                     log_predictions=False, max_image_uploads=7, log_per_class_metrics=True,
                                     default_checkpoint_filename="best.pt", conf_thres=0.25, iou_thres=0.5)
    # COMET_LOG_BATCH_METRICS (upstream's name) wins over the alias
    assert not CometSettings.from_env({"COMET_LOG_BATCH_METRICS": "false",
                                       "COMET_UPLOAD_BATCH_METRICS": "true"}).log_batch_metrics


def test_comet_settings_bad_values_warn_and_keep_defaults(warnings_seen):
    settings = CometSettings.from_env({"COMET_MAX_IMAGE_UPLOADS": "many", "COMET_MODE": "cloud"})
    assert settings.max_image_uploads == 100 and settings.mode == "online"
    assert any("COMET_MAX_IMAGE_UPLOADS='many'" in w for w in warnings_seen)
    assert any("COMET_MODE='cloud'" in w for w in warnings_seen)


def test_comet_configured_needs_a_key_offline_mode_or_config_file(clean_env, tmp_path):
    assert not comet_configured()
    assert comet_configured({"COMET_API_KEY": "abc"})
    assert comet_configured({"COMET_MODE": "offline"})
    assert not comet_configured({"COMET_MODE": "online"})
    config = tmp_path / "comet.config"
    assert not comet_configured({"COMET_CONFIG": str(config)})
    config.write_text("[comet]\nproject_name = p\n")
    assert comet_configured({"COMET_CONFIG": str(config)})


# ------------------------------------------------------------------------------------------------------- payloads
def test_native_boxes_undo_the_letterbox_and_filter_confidence():
    image = torch.zeros(2, 3, 64, 64)
    targets = torch.tensor([[1.0, 2.0, 32.0, 32.0, 16.0, 8.0], [0.0, 1.0, 10.0, 10.0, 4.0, 4.0]])
    out = [torch.zeros(0, 6), torch.tensor([[24.0, 28.0, 40.0, 36.0, 0.5, 2.0], [0.0, 0.0, 1.0, 1.0, 0.001, 0.0]])]
    shape = ((32, 128), ((0.5, 0.5), (0.0, 24.0)))  # a 128x32 image letterboxed to 64x64: gain 0.5, pad top 24
    labels, predictions = native_boxes(image, targets, out, 1, shape, conf_thres=0.001)
    np.testing.assert_allclose(labels, [[2.0, 48.0, 8.0, 80.0, 24.0]])
    np.testing.assert_allclose(predictions, [[48.0, 8.0, 80.0, 24.0, 0.5, 2.0]])


def test_per_class_metrics_use_class_names_and_support():
    metrics = per_class_metrics({0: "a", 1: "b"}, nt=np.array([3, 5]), tp=[4.0], fp=[1.0], p=[0.8], r=[0.8],
                                f1=[0.8], ap=[0.4], ap50=[0.7], ap_class=np.array([1]))
    assert metrics == {"b": {"mAP@.5": 0.7, "mAP@.5:.95": 0.4, "precision": 0.8, "recall": 0.8, "f1": 0.8,
                             "true_positives": 4.0, "false_positives": 1.0, "support": 5.0}}


# -------------------------------------------------------------------------------------------------- Loggers / CSV
def test_csv_only_without_optional_loggers(clean_env, tmp_path):
    loggers = Loggers(tmp_path, opt=make_opt(tmp_path), include=("csv",))
    callbacks = Callbacks()
    loggers.register(callbacks)
    assert loggers.tb is None and loggers.comet_logger is None
    assert [name for name, _ in loggers.active()] == ["csv"]
    assert all(len(callbacks.get_registered_actions(hook)) == 1 for hook in HOOKS)
    drive_epochs(callbacks, 2)
    table = csv_by_epoch(tmp_path / "results.csv")
    assert list(table) == [0, 1] and list(table[1]) == list(RESULTS_KEYS)
    assert [table[1][k] for k in RESULTS_KEYS] == pytest.approx(epoch_values(1))


def test_one_failing_logger_warns_once_and_others_continue(clean_env, tmp_path, warnings_seen):
    loggers = Loggers(tmp_path, opt=make_opt(tmp_path), include=("csv",))

    class Broken:
        calls = 0

        def on_fit_epoch_end(self, *args):
            Broken.calls += 1
            raise OSError("disk quota")

    loggers.comet_logger = Broken()
    callbacks = Callbacks()
    loggers.register(callbacks)
    drive_epochs(callbacks, 3)
    assert Broken.calls == 3
    assert sum("comet logger failed in on_fit_epoch_end" in w and "disk quota" in w for w in warnings_seen) == 1
    assert list(csv_by_epoch(tmp_path / "results.csv")) == [0, 1, 2]


def test_non_main_rank_gets_no_optional_loggers(clean_env, tmp_path):
    clean_env.setenv("RANK", "1")
    clean_env.setenv("COMET_MODE", "offline")
    loggers = Loggers(tmp_path, opt=make_opt(tmp_path))
    assert loggers.tb is None and loggers.comet_logger is None


def test_unimportable_comet_warns_once_and_is_skipped(clean_env, tmp_path, warnings_seen):
    clean_env.setenv("COMET_MODE", "offline")
    clean_env.setitem(sys.modules, "comet_ml", None)  # import comet_ml -> ImportError
    loggers = Loggers(tmp_path, opt=make_opt(tmp_path), include=("csv", "comet"))
    assert loggers.comet_logger is None
    assert sum("comet_ml cannot be imported" in w for w in warnings_seen) == 1


def test_unconfigured_comet_is_never_imported(clean_env, tmp_path):
    clean_env.setitem(sys.modules, "comet_ml", None)
    loggers = Loggers(tmp_path, opt=make_opt(tmp_path), include=("csv", "comet"))
    assert loggers.comet_logger is None


# ---------------------------------------------------------------------------------------------------- TensorBoard
@pytest.mark.skipif(not tensorboard_available(), reason="tensorboard is not installed")
def test_tensorboard_scalars_use_results_csv_names(clean_env, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    loggers = Loggers(tmp_path, opt=make_opt(tmp_path, noplots=False), include=("csv", "tb"), tb_graph=False)
    callbacks = Callbacks()
    loggers.register(callbacks)
    drive_epochs(callbacks, 2)
    callbacks.run("on_train_end", tmp_path / "last.pt", tmp_path / "best.pt", 1, None)
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0])).Reload()
    assert sorted(accumulator.Tags()["scalars"]) == sorted(RESULTS_KEYS)
    for i, key in enumerate(RESULTS_KEYS):
        assert [(e.step, round(e.value, 5)) for e in accumulator.Scalars(key)] == \
            [(0, round(epoch_values(0)[i], 5)), (1, round(epoch_values(1)[i], 5))]
    assert {"labels", "train_batch0", "results"} <= set(accumulator.Tags()["images"])


# ---------------------------------------------------------------------------------------------------------- Comet
def offline_env(monkeypatch, directory: Path) -> None:
    monkeypatch.setenv("COMET_MODE", "offline")
    monkeypatch.setenv("COMET_OFFLINE_DIRECTORY", str(directory))


def require_comet() -> None:
    pytest.importorskip("comet_ml")


def test_comet_offline_archive_matches_results_csv_and_resume_continues(clean_env, tmp_path):
    require_comet()
    offline_env(clean_env, tmp_path / "comet")
    run = tmp_path / "run"
    run.mkdir()
    loggers = Loggers(run, opt=make_opt(run), hyp={"lr0": 0.01}, include=("csv", "comet"))
    callbacks = Callbacks()
    loggers.register(callbacks)
    drive_epochs(callbacks, 2)
    callbacks.run("on_train_end", run / "last.pt", run / "best.pt", 1, None)
    callbacks.run("teardown")
    key = read_experiment_key(run)
    archives = list((tmp_path / "comet").glob("*.zip"))
    assert key and [a.name for a in archives] == [f"{key}.zip"]
    assert_same_metrics(comet_archive_metrics(archives[0]), csv_by_epoch(run / "results.csv"))

    resumed = Loggers(run, opt=make_opt(run, resume=True), hyp={"lr0": 0.01}, include=("csv", "comet"))
    callbacks = Callbacks()
    resumed.register(callbacks)
    drive_epochs(callbacks, 1, start=2)
    callbacks.run("teardown")
    assert resumed.comet_logger.experiment.get_key() == key
    second = [a for a in (tmp_path / "comet").glob("*.zip") if a not in archives]
    assert len(second) == 1 and second[0].name.startswith(key)
    with zipfile.ZipFile(second[0]) as archive:
        experiment = json.loads(archive.read("experiment.json"))
    assert experiment["offline_id"] == key and experiment["resume_strategy"] == "get"
    assert list(comet_archive_metrics(second[0])) == [2]


def test_comet_prediction_images_carry_boxes_and_respect_the_cap(clean_env, tmp_path):
    require_comet()
    offline_env(clean_env, tmp_path / "comet")
    clean_env.setenv("COMET_MAX_IMAGE_UPLOADS", "1")
    loggers = Loggers(tmp_path, opt=make_opt(tmp_path), include=("comet",))
    callbacks = Callbacks()
    loggers.register(callbacks)
    drive_epochs(callbacks, 2)
    callbacks.run("teardown")
    comet_logger = loggers.comet_logger
    assert comet_logger.logged_images == 1 and list(comet_logger.image_metadata) == ["test_loggers_curr_epoch_0"]
    metadata = comet_logger.image_metadata["test_loggers_curr_epoch_0"]
    assert metadata == [{"label": "square-gt", "score": 100.0, "box": {"x": 24.0, "y": 24.0, "x2": 40.0, "y2": 40.0}},
                        {"label": "square", "score": pytest.approx(90.0),
                         "box": {"x": 20.0, "y": 20.0, "x2": 44.0, "y2": 44.0}}]


def test_comet_creation_error_is_one_warning_and_no_comet(clean_env, tmp_path, warnings_seen):
    require_comet()
    import comet_ml

    offline_env(clean_env, tmp_path / "comet")

    def broken(*args, **kwargs):
        raise RuntimeError("backend exploded")

    clean_env.setattr(comet_ml, "OfflineExperiment", broken)
    loggers = Loggers(tmp_path, opt=make_opt(tmp_path), include=("csv", "comet"))
    assert loggers.comet_logger is None
    assert sum("backend exploded" in w for w in warnings_seen) == 1


def test_comet_failing_call_disables_comet_with_one_warning(clean_env, tmp_path, warnings_seen):
    require_comet()
    offline_env(clean_env, tmp_path / "comet")
    loggers = Loggers(tmp_path, opt=make_opt(tmp_path), include=("csv", "comet"))
    experiment = loggers.comet_logger.experiment

    def failing(*args, **kwargs):
        raise ConnectionError("lost")

    clean_env.setattr(experiment, "log_metrics", failing)
    callbacks = Callbacks()
    loggers.register(callbacks)
    drive_epochs(callbacks, 3)
    assert loggers.comet_logger.disabled and loggers.comet_logger.ended
    assert sum("Comet logging is off" in w for w in warnings_seen) == 1
    assert list(csv_by_epoch(tmp_path / "results.csv")) == [0, 1, 2]


def test_online_without_credentials_falls_back_to_offline(clean_env, tmp_path, warnings_seen):
    require_comet()
    config = tmp_path / "comet.config"
    config.write_text("[comet]\nproject_name = yolo-test\n")
    clean_env.setenv("COMET_CONFIG", str(config))
    clean_env.setenv("COMET_OFFLINE_DIRECTORY", str(tmp_path / "comet"))
    loggers = Loggers(tmp_path, opt=make_opt(tmp_path), include=("comet",))
    loggers.teardown()
    assert loggers.comet_logger is not None and loggers.comet_logger.offline
    assert any("Comet credentials have not been set" in w for w in warnings_seen)
    assert len(list((tmp_path / "comet").glob("*.zip"))) == 1


# ------------------------------------------------------------------------------------------- through train.run
def train_once(data: str, project: Path) -> Path:
    """One epoch at 64 px on CPU with validation (metrics are logged); returns the run folder."""
    import train

    opt = train.run(data=data, epochs=1, imgsz=64, batch_size=4, workers=0, device="cpu", noautoanchor=True,
                    noplots=True, project=str(project), name="exp", seed=0)
    return Path(opt.save_dir)


@pytest.fixture(scope="module")
def comet_offline_run(tiny_data, tmp_path_factory) -> tuple[Path, Path]:
    """A 1-epoch run with ``COMET_MODE=offline``; returns ``(run folder, offline directory)``."""
    pytest.importorskip("comet_ml")
    offline = tmp_path_factory.mktemp("comet")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in COMET_ENV:
            monkeypatch.delenv(name, raising=False)
        offline_env(monkeypatch, offline)
        monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")
        run = train_once(tiny_data, tmp_path_factory.mktemp("runs"))
    return run, offline


@pytest.mark.slow
def test_train_run_comet_offline_archive_equals_results_csv(comet_offline_run):
    run, offline = comet_offline_run
    key = read_experiment_key(run)
    archive = offline / f"{key}.zip"
    assert archive.is_file(), sorted(p.name for p in offline.iterdir())
    table = csv_by_epoch(run / "results.csv")
    assert list(table) == [0]
    assert_same_metrics(comet_archive_metrics(archive), table)
    with zipfile.ZipFile(archive) as archive_file:
        uploads = [json.loads(line)["payload"] for line in archive_file.read("messages.json").decode().splitlines()
                   if json.loads(line)["type"] == "file_upload"]
    models = [u for u in uploads if u.get("upload_type") == "model-element"]
    assert models and all(u["metadata"]["epochs_trained"] == 1 for u in models)


@pytest.mark.slow
@pytest.mark.skipif(not tensorboard_available(), reason="tensorboard is not installed")
def test_train_run_writes_tensorboard_events(comet_offline_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = comet_offline_run
    events = list(run.glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0])).Reload()
    assert sorted(accumulator.Tags()["scalars"]) == sorted(RESULTS_KEYS)
    table = csv_by_epoch(run / "results.csv")
    assert [accumulator.Scalars(k)[0].value for k in RESULTS_KEYS] == \
        pytest.approx([table[0][k] for k in RESULTS_KEYS], rel=1e-4, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["unimportable", "raises"])
def test_broken_comet_leaves_results_csv_unchanged(failure, comet_offline_run, tiny_data, tmp_path, clean_env,
                                                   warnings_seen):
    offline_env(clean_env, tmp_path / "comet")
    if failure == "unimportable":
        clean_env.setitem(sys.modules, "comet_ml", None)
    else:
        import comet_ml

        def broken(*args, **kwargs):
            raise RuntimeError("comet backend exploded")

        clean_env.setattr(comet_ml, "OfflineExperiment", broken)
    run = train_once(tiny_data, tmp_path / "runs")
    reference, _ = comet_offline_run
    assert (run / "results.csv").read_text() == (reference / "results.csv").read_text()
    assert (run / "weights" / "best.pt").is_file() and not (tmp_path / "comet").exists()
    expected = "cannot be imported" if failure == "unimportable" else "comet backend exploded"
    assert sum(expected in w for w in warnings_seen) == 1


@pytest.mark.slow
def test_resumed_train_run_continues_the_comet_experiment(tiny_data, tmp_path, clean_env):
    import train

    offline_env(clean_env, tmp_path / "comet")
    pytest.importorskip("comet_ml")
    callbacks = Callbacks()  # stop after the first of two epochs: last.pt stays resumable

    def stop(*args):
        callbacks.stop_training = True

    callbacks.register_action("on_fit_epoch_end", name="stop", callback=stop)
    opt = train.build_parser().parse_args([])
    for key, value in dict(data=tiny_data, epochs=2, imgsz=64, batch_size=4, workers=0, device="cpu",
                           noautoanchor=True, noplots=True, project=str(tmp_path / "runs"), name="exp").items():
        setattr(opt, key, value)
    train.main(opt, callbacks)
    run = Path(opt.save_dir)
    key = read_experiment_key(run)
    assert [a.name for a in (tmp_path / "comet").glob("*.zip")] == [f"{key}.zip"]

    train.run(resume=str(run / "weights" / "last.pt"))
    assert read_experiment_key(run) == key
    continued = [a for a in (tmp_path / "comet").glob("*.zip") if a.name != f"{key}.zip"]
    assert len(continued) == 1 and continued[0].name.startswith(f"{key}-")
    with zipfile.ZipFile(continued[0]) as archive:
        assert json.loads(archive.read("experiment.json"))["resume_strategy"] == "get"
    assert list(comet_archive_metrics(continued[0])) == [1]
    assert list(csv_by_epoch(run / "results.csv")) == [0, 1]
