"""Trainer mechanics: warmup, multi-scale, gains, freeze, NaN detection, resume state, callbacks, early stop."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.train_options import TrainOptions, prepare_new_run, restore_resume_options
from engine.trainer import NonFiniteLossError, Trainer, TrainState
from utils.callbacks import HOOK_NAMES, Callbacks
from utils.checkpoint import torch_safe_load
from utils.data.shapes import SHAPE_NAMES
from utils.hyp import Hyp
from utils.optim import linear_lr, smart_optimizer
from utils.plotting.results import read_csv_table
from utils.precision import PrecisionPolicy

CPU = torch.device("cpu")


def make_options(tiny_data: str, tmp_path: Path, **overrides) -> TrainOptions:
    values = {"data": tiny_data, "epochs": 1, "imgsz": 64, "batch_size": 4, "workers": 0, "device": "cpu",
              "noautoanchor": True, "noplots": True, "project": str(tmp_path), "name": "exp", **overrides}
    return prepare_new_run(TrainOptions(**values))


def bare_trainer(batch_size: int = 16, nw: int = 100, epochs: int = 10) -> Trainer:
    """A Trainer with only what warmup/multi-scale need: a tiny model, its optimizer and the LR lambda."""
    trainer = Trainer.__new__(Trainer)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    trainer.hyp = Hyp(warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.937, lrf=0.01)
    trainer.optimizer = smart_optimizer(model, "SGD", 0.01, 0.937, 5e-4)
    trainer.lf = linear_lr(epochs, 0.01)
    torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lr_lambda=trainer.lf)
    trainer.nw, trainer.nbs, trainer.batch_size, trainer.imgsz, trainer.gs = nw, 64, batch_size, 320, 32
    trainer.policy = PrecisionPolicy("cpu", None, True, "test: fp32 channels_last")
    trainer.state = TrainState()
    return trainer


def test_warmup_interpolates_lr_momentum_and_accumulation():
    trainer = bare_trainer(batch_size=16, nw=100, epochs=10)
    trainer._warmup(0, epoch=0)
    groups = trainer.optimizer.param_groups
    assert [g["lr"] for g in groups] == [0.1, 0.0, 0.0]
    assert all(g["momentum"] == pytest.approx(0.8) for g in groups) and trainer.state.accumulate == 1
    trainer._warmup(50, epoch=2)
    target = 0.01 * ((1 - 2 / 10) * 0.99 + 0.01)
    assert groups[0]["lr"] == pytest.approx((0.1 + target) / 2) and groups[1]["lr"] == pytest.approx(target / 2)
    assert groups[2]["momentum"] == pytest.approx((0.8 + 0.937) / 2) and trainer.state.accumulate == 2  # 2.5 -> 2
    trainer._warmup(100, epoch=2)
    assert [g["lr"] for g in groups] == pytest.approx([target] * 3) and trainer.state.accumulate == 4


def test_multi_scale_sizes_are_stride_multiples_within_half_and_one_and_half():
    trainer = bare_trainer()
    resized = [trainer._multi_scale(torch.zeros(1, 3, 320, 256)) for _ in range(40)]
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in resized)
    sizes = {tuple(x.shape[2:]) for x in resized}
    assert len(sizes) > 3
    for height, width in sizes:
        assert height % 32 == 0 and width % 32 == 0 and 160 <= height <= 480 + 32
        assert width == pytest.approx(height * 256 / 320, abs=32)


def test_optimizer_step_clips_gradient_norm_to_10_and_updates_ema():
    trainer = bare_trainer()
    model = nn.Linear(4, 4)
    trainer.model, trainer.amp = model, False
    trainer.optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=False)
    seen = []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (seen.append(float(torch.cat([p.grad.flatten() for p in
                                                                            model.parameters()]).norm())),
                                              step(*a, **k))
    trainer.ema = type("EMA", (), {"updates": 0, "update": lambda self, m: setattr(self, "updates", 1)})()
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)
    trainer._optimizer_step(0, 0, [])
    assert seen == [pytest.approx(10.0, rel=1e-5)] and trainer.ema.updates == 1
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_setup_scales_loss_gains_weight_decay_and_sets_model_attributes(tiny_data, tmp_path):
    trainer = Trainer(make_options(tiny_data, tmp_path, batch_size=2), CPU)
    trainer.setup()
    hyp = trainer.hyp
    assert hyp["box"] == pytest.approx(0.05) and hyp["cls"] == pytest.approx(0.5 * 8 / 80)
    assert hyp["obj"] == pytest.approx((64 / 640) ** 2) and hyp["label_smoothing"] == 0.0
    assert trainer.state.accumulate == 32 and hyp["weight_decay"] == pytest.approx(0.0005 * 2 * 32 / 64)
    assert trainer.opt.hyp["box"] == 0.05, "opt.hyp keeps the unscaled values"
    decays = [g["weight_decay"] for g in trainer.optimizer.param_groups]
    assert decays == [0.0, pytest.approx(0.0005), 0.0]
    assert trainer.describe()["param_groups"] == [60, 60, 57] and (trainer.nb, trainer.nw) == (4, 100)
    model = trainer.model
    assert model.nc == 8 and model.names == dict(enumerate(SHAPE_NAMES)) and model.hyp == hyp.to_dict()
    assert model.class_weights.shape == (8,) and model.class_weights.sum() == pytest.approx(8.0)
    assert callable(trainer.compute_loss) and trainer.amp is False and trainer.channels_last
    assert model.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_freeze_keeps_frozen_parameters_unchanged(tiny_data, tmp_path):
    trainer = Trainer(make_options(tiny_data, tmp_path, freeze=[3], nosave=True, noval=True), CPU)
    trainer.setup()
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.fit()
    after = dict(trainer.model.named_parameters())
    frozen = [k for k in before if k.startswith(("model.0.", "model.1.", "model.2."))]
    assert frozen and all(not after[k].requires_grad and torch.equal(before[k], after[k]) for k in frozen)
    trainable = [k for k in before if k not in frozen]
    assert all(after[k].requires_grad for k in trainable)
    convs = [k for k in trainable if k.endswith("conv.weight")]  # BN scales of 1.0 barely move at warmup LRs
    assert len(convs) == 50 and all(not torch.equal(before[k], after[k].detach()) for k in convs)


def test_non_finite_loss_is_reported_with_its_batch_and_keeps_last_pt(tiny_data, tmp_path, monkeypatch):
    trainer = Trainer(make_options(tiny_data, tmp_path, epochs=3, noval=True), CPU)
    original = Trainer.compute_batch_loss

    def poisoned(self, images, targets):
        loss, items = original(self, images, targets)
        if self.state.epoch == 1:
            return loss * float("nan"), items * float("nan")
        return loss, items

    monkeypatch.setattr(Trainer, "compute_batch_loss", poisoned)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    message = str(info.value)
    assert "non-finite loss" in message and "at epoch 1, batch 0" in message
    assert sum(".jpg" in line for line in message.splitlines()) == 4, "the 4 image paths of the batch are listed"
    assert "this batch triggered it" in message and f"--resume {trainer.last}" in message
    ckpt = torch_safe_load(trainer.last)
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None, "last.pt of epoch 0 stays resumable"
    assert all(p.is_contiguous() for p in [*ckpt["model"].parameters(), *ckpt["ema"].parameters()])
    assert torch.isfinite(torch.cat([p.flatten().float() for p in ckpt["model"].parameters()])).all()


def test_resume_restores_optimizer_ema_epoch_best_fitness_and_schedule(tiny_data, tmp_path):
    callbacks = Callbacks()
    callbacks.register_action("on_model_save", callback=lambda *a: setattr(callbacks, "stop_training", True))
    first = Trainer(make_options(tiny_data, tmp_path, epochs=4, noval=True), CPU, callbacks)
    first.train()
    assert first.state.interrupted and first.state.epoch == 0
    ckpt = torch_safe_load(first.last)
    resumed = Trainer(restore_resume_options(TrainOptions(resume=str(first.last))), CPU)
    resumed.setup()
    state = resumed.state
    assert (state.start_epoch, state.epochs, state.best_fitness) == (1, 4, pytest.approx(0.0))
    assert resumed.ema.updates == ckpt["updates"] == 2
    saved = ckpt["optimizer"]["state"]
    restored = resumed.optimizer.state_dict()["state"]
    assert saved.keys() == restored.keys() and all(
        torch.equal(saved[k]["momentum_buffer"], restored[k]["momentum_buffer"]) for k in saved)
    ema_expected = {k: v.float() for k, v in ckpt["ema"].state_dict().items()}
    assert all(torch.equal(v, ema_expected[k]) for k, v in resumed.ema.ema.state_dict().items()
               if v.is_floating_point())
    assert resumed.optimizer.param_groups[1]["lr"] == pytest.approx(0.01 * resumed.lf(0)), "upstream lags one epoch"
    fresh = Trainer(make_options(tiny_data, tmp_path, epochs=4, noval=True, name="fresh"), CPU)
    fresh.setup()
    for trainer, epochs_done in ((fresh, 2), (resumed, 1)):  # both have now finished epoch 1
        trainer._start_schedule()
        for _ in range(epochs_done):
            trainer.scheduler.step()
    assert fresh.optimizer.param_groups[1]["lr"] == resumed.optimizer.param_groups[1]["lr"]


def test_callbacks_fire_with_upstream_names_order_and_arguments(tiny_data, tmp_path):
    callbacks, calls = Callbacks(), []
    for hook in HOOK_NAMES:
        callbacks.register_action(hook, callback=lambda *a, _h=hook, **k: calls.append((_h, a, k)))
    Trainer(make_options(tiny_data, tmp_path, epochs=1), CPU, callbacks).train()
    order = list(dict.fromkeys(name for name, _, _ in calls))
    assert order[:6] == ["on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start",
                         "on_train_epoch_start", "on_train_batch_start", "on_train_batch_end"]
    assert order.index("on_train_epoch_end") < order.index("on_fit_epoch_end") < order.index("on_model_save")
    assert order[-2:] == ["on_train_end", "teardown"]
    args = {name: a for name, a, _ in calls}
    labels, names = args["on_pretrain_routine_end"]
    assert labels.shape[1] == 5 and names == dict(enumerate(SHAPE_NAMES))
    model, ni, images, targets, paths, mean_loss = args["on_train_batch_end"]
    assert ni == 1 and images.shape == (4, 3, 64, 64) and targets.shape[1] == 6 and len(mean_loss) == 3
    log_values, epoch, best_fitness, fitness = args["on_fit_epoch_end"]
    assert len(log_values) == 13 and epoch == 0 and best_fitness == fitness
    last, epoch, final_epoch, _, _ = args["on_model_save"]
    assert last.name == "last.pt" and final_epoch is True
    last, best, epoch, results = args["on_train_end"]
    assert best.name == "best.pt" and len(results) == 7
    assert [k for name, _, k in calls if name == "on_train_epoch_end"] == [{"epoch": 0}]


def test_early_stopping_and_save_period(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "validate", lambda self: ((0.0,) * 7, np.zeros(self.nc)))  # fitness stays 0
    trainer = Trainer(make_options(tiny_data, tmp_path, epochs=6, noval=True, patience=1, save_period=1), CPU)
    trainer.train()
    assert trainer.state.stop and trainer.state.epoch == 1
    weights = sorted(p.name for p in trainer.weights_dir.glob("*.pt"))
    assert weights == ["best.pt", "epoch0.pt", "epoch1.pt", "last.pt"]
    assert read_csv_table(trainer.save_dir / "results.csv")[1][:, 0].tolist() == [0, 1]
    assert torch_safe_load(trainer.last)["epoch"] == -1, "an early-stopped run is finished and stripped"


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {"rect": True}, {"quad": True, "batch_size": 8}, {"image_weights": True}, {"multi_scale": True},
    {"single_cls": True}, {"cos_lr": True, "optimizer": "Adam"}, {"optimizer": "AdamW", "label_smoothing": 0.1},
    {"cache": "ram"}])
def test_training_options_run_one_epoch(tiny_data, tmp_path, overrides):
    trainer = Trainer(make_options(tiny_data, tmp_path, nosave=True, **overrides), CPU)
    results = trainer.train()
    assert len(results) == 7 and all(np.isfinite(results))
    if overrides.get("single_cls"):
        assert trainer.nc == 1 and trainer.model.names == {0: "item"}


def test_train_state_is_a_plain_dataclass():
    fields = {f.name for f in dataclasses.fields(TrainState)}
    assert {"epoch", "start_epoch", "epochs", "step", "last_opt_step", "accumulate", "best_fitness", "stop",
            "interrupted"} <= fields
    assert TrainState().last_opt_step == -1 and TrainState().accumulate == 1


@pytest.mark.parametrize("world_size", [1, 2])
def test_mid_epoch_stop_is_immediate_alone_and_deferred_to_epoch_end_under_ddp(tiny_data, tmp_path, world_size):
    callbacks = Callbacks()
    batches_seen: list[int] = []

    def stop_after_first_batch(*args) -> None:
        batches_seen.append(args[1])
        callbacks.stop_training = True

    callbacks.register_action("on_train_batch_end", callback=stop_after_first_batch)
    trainer = Trainer(make_options(tiny_data, tmp_path, epochs=3, noval=True, batch_size=2), CPU, callbacks)
    trainer.setup()
    trainer.world_size = world_size  # as a DDP rank sees it; without a process group the broadcast is the identity
    trainer.fit()
    assert trainer.state.interrupted and trainer.state.epoch == 0
    if world_size == 1:
        assert batches_seen == [0] and not (tmp_path / "exp" / "results.csv").exists()
    else:  # every rank runs the whole epoch, then all leave together after the end-of-epoch broadcast
        assert batches_seen == list(range(trainer.nb)) and trainer.nb == 4
        assert len(read_csv_table(tmp_path / "exp" / "results.csv")[1]) == 1


def test_try_command_names_the_best_weights_and_the_first_val_source(tmp_path, monkeypatch):
    from engine.trainer import try_command

    monkeypatch.chdir(tmp_path)
    weights, val = tmp_path / "runs" / "best.pt", tmp_path / "my data" / "val"
    weights.parent.mkdir()
    weights.touch()
    val.mkdir(parents=True)
    expected = "python detect.py --weights runs/best.pt --source 'my data/val' --img 256"
    assert try_command(weights, str(val), 256) == expected
    assert try_command(weights, [str(val), "other"], 320).endswith("--source 'my data/val' --img 320")
    assert try_command(weights, str(tmp_path / "missing"), 320) == ""
    assert try_command(tmp_path / "none.pt", str(val), 320) == ""
    assert try_command(weights, None, 320) == ""


def test_warmup_floor_is_upstreams_100_batches_unless_the_file_sets_warmup_min_iters():
    from engine.trainer import warmup_iterations

    assert warmup_iterations(Hyp(warmup_epochs=1.0), batches_per_epoch=25) == 100
    assert warmup_iterations(Hyp(warmup_epochs=3.0), batches_per_epoch=50) == 150
    short = Hyp.from_dict({"warmup_epochs": 1.0, "warmup_min_iters": 10})
    assert warmup_iterations(short, batches_per_epoch=25) == 25 and short.to_dict()["warmup_min_iters"] == 10
    assert "warmup_min_iters" not in Hyp().to_dict()
