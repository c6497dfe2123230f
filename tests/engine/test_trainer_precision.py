"""The trainer under the precision policy: which policy it picks, fp32 state under bf16 autocast, saved checkpoints.

``utils.precision.cpu_has_native_bf16`` is monkeypatched, so these tests run the same on CPUs with and without
native bf16 (torch emulates bf16 autocast where the hardware lacks it: slower, same dtypes).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from engine.train_options import TrainOptions, prepare_new_run
from engine.trainer import Trainer
from utils import precision
from utils.checkpoint import torch_safe_load

CPU = torch.device("cpu")


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.delenv("YOLOV5_FP32", raising=False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)


def set_up_trainer(tiny_data: str, tmp_path: Path, force_fp32: bool = False) -> Trainer:
    options = prepare_new_run(TrainOptions(data=tiny_data, epochs=1, imgsz=64, batch_size=2, workers=0,
                                           device="cpu", noautoanchor=True, noplots=True, project=str(tmp_path),
                                           name="exp"))
    trainer = Trainer(dataclasses.replace(options, fp32=force_fp32), CPU)
    trainer.setup()
    return trainer


def first_batch(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets, _, _ = next(iter(trainer.train_loader))
    return images.contiguous(memory_format=torch.channels_last).float() / 255, targets


def test_bf16_cpu_trains_in_bf16_channels_last_with_fp32_loss_params_ema_and_batchnorm(tiny_data, tmp_path,
                                                                                      native_bf16, log_lines):
    trainer = set_up_trainer(tiny_data, tmp_path)
    assert (trainer.policy.name, trainer.amp, trainer.channels_last) == ("bf16+channels_last", False, True)
    assert trainer.describe()["precision"] == "bf16+channels_last" and not trainer.scaler.is_enabled()
    assert "precision: bf16+channels_last (CPU has native bf16 (AMX/AVX512-BF16))" in log_lines
    model = trainer.model
    assert model.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    hook = model.model[-1].register_forward_hook(lambda module, args, out: seen.append(out[0].dtype))
    images, targets = first_batch(trainer)
    loss, items = trainer.compute_batch_loss(images, targets)
    hook.remove()
    assert seen == [torch.bfloat16], "the forward pass ran under bf16 autocast"
    assert loss.dtype == items.dtype == torch.float32 and torch.isfinite(loss).all()
    loss.backward()
    trainer._optimizer_step(0, 0, [])
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.dtype for p in trainer.ema.ema.parameters()} == {torch.float32} and trainer.ema.updates == 1
    states = [s for state in trainer.optimizer.state.values() for s in state.values() if torch.is_tensor(s)]
    assert states and {s.dtype for s in states} == {torch.float32}
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {b.running_var.dtype for b in batch_norms} == {torch.float32}


def test_checkpoint_of_a_bf16_channels_last_run_is_upstream_fp16_nchw(tiny_data, tmp_path, native_bf16):
    trainer = set_up_trainer(tiny_data, tmp_path)
    images, targets = first_batch(trainer)
    trainer.compute_batch_loss(images, targets)[0].backward()
    trainer._optimizer_step(0, 0, [])
    trainer.save(epoch=0, final_epoch=False)
    ckpt = torch_safe_load(trainer.last)
    for key in ("model", "ema"):
        tensors = list(ckpt[key].state_dict().values())
        assert {t.dtype for t in tensors if t.is_floating_point()} == {torch.float16}, key
        assert all(t.is_contiguous() for t in tensors), key
    momentum = [s for state in ckpt["optimizer"]["state"].values() for s in state.values() if torch.is_tensor(s)]
    assert momentum and all(t.is_contiguous() for t in momentum)
    assert trainer.model.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last), "live model kept"


def test_fp32_flag_trains_plain_fp32_nchw(tiny_data, tmp_path, native_bf16, log_lines):
    trainer = set_up_trainer(tiny_data, tmp_path, force_fp32=True)
    assert (trainer.policy.name, trainer.amp, trainer.channels_last) == ("fp32", False, False)
    assert "precision: fp32 (fp32 forced (--fp32 / YOLOV5_FP32))" in log_lines
    assert trainer.model.model[0].conv.weight.is_contiguous()
    images, targets = first_batch(trainer)
    seen = []
    trainer.model.model[-1].register_forward_hook(lambda module, args, out: seen.append(out[0].dtype))
    trainer.compute_batch_loss(images, targets)
    assert seen == [torch.float32]


def test_cpu_without_native_bf16_trains_fp32_channels_last(tiny_data, tmp_path, monkeypatch, log_lines):
    monkeypatch.delenv("YOLOV5_FP32", raising=False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    monkeypatch.setattr(precision, "cpu_has_native_bf16", precision.cpu_has_native_bf16.__wrapped__)
    trainer = set_up_trainer(tiny_data, tmp_path)
    assert (trainer.policy.name, trainer.amp, trainer.channels_last) == ("fp32+channels_last", False, True)
    assert "precision: fp32+channels_last (no native bf16 on this CPU; channels_last fp32)" in log_lines
    assert trainer.model.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
