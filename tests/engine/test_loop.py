"""The shared training loop (engine.loop.TrainingLoop) with a tiny fake subclass: a linear model on fixed batches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from engine.loop import LoopState, NonFiniteLossError, TrainingLoop
from utils.callbacks import Callbacks
from utils.checkpoint import torch_safe_load

BATCHES = 4


def make_batches(seed: int = 0) -> list[tuple]:
    """Four batches of (inputs (2, 3), targets (2, 1), paths, shapes) for a linear regression."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(2, 3, generator=generator), torch.randn(2, 1, generator=generator),
             [f"img{i}a.jpg", f"img{i}b.jpg"], None) for i in range(BATCHES)]


class FakeLoop(TrainingLoop):
    """Linear regression with SGD: fitness = -(mean train loss); checkpoints hold the weights and optimizer."""

    def __init__(self, save_dir: Path, epochs: int = 3, accumulate: int = 1, callbacks: Callbacks | None = None,
                 losses: dict | None = None) -> None:
        super().__init__(LoopState(epochs=epochs, accumulate=accumulate), save_dir, callbacks)
        self.losses = losses or {}  # (epoch, batch) -> forced loss value
        self.steps = 0
        self.evaluated: list[int] = []

    def setup(self) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(3, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: 1.0 / (1 + e))
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.train_loader = make_batches()
        self.nb = len(self.train_loader)
        if self.last.is_file():  # resume
            ckpt = torch_safe_load(self.last)
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.state.start_epoch, self.state.best_fitness = ckpt["epoch"] + 1, ckpt["best_fitness"]
        self.ready = True

    def _start_schedule(self) -> None:
        self.scheduler.last_epoch = self.state.start_epoch - 1

    def forward_loss(self, i, epoch, batch):
        loss = nn.functional.mse_loss(self.model(batch[0]), batch[1], reduction="sum")
        if (epoch, i) in self.losses:
            loss = loss * 0 + self.losses[(epoch, i)]
        return loss, loss.detach().view(1), batch[0]

    def _optimizer_step(self, i, epoch, paths):
        self.steps += 1
        super()._optimizer_step(i, epoch, paths)

    def evaluate(self, epoch: int) -> None:
        state = self.state
        self.evaluated.append(epoch)
        state.fitness = -float(state.mean_loss[0])
        improved = state.fitness > state.best_fitness or epoch == 0
        state.best_fitness = max(state.best_fitness, state.fitness) if epoch else state.fitness
        ckpt = {"epoch": epoch, "best_fitness": state.best_fitness, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict()}
        self.save_epoch(ckpt, epoch, epoch + 1 == state.epochs, improved)

    def finish(self) -> dict:
        return {name: p.detach().clone() for name, p in self.model.named_parameters()}


def test_gradient_accumulation_sums_batches_before_each_step(tmp_path):
    loop = FakeLoop(tmp_path / "acc", epochs=1, accumulate=2)
    loop.setup()
    start = {k: v.clone() for k, v in loop.model.state_dict().items()}
    loop.fit()
    assert loop.steps == BATCHES // 2 and loop.state.last_opt_step == BATCHES - 1
    reference = nn.Linear(3, 1)
    reference.load_state_dict(start)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    batches = make_batches()
    for pair in (batches[:2], batches[2:]):  # one step per two batches, gradients summed
        for x, y, _, _ in pair:
            nn.functional.mse_loss(reference(x), y, reduction="sum").backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.allclose(a, b) for a, b in zip(loop.model.parameters(), reference.parameters(), strict=True))


def test_non_finite_loss_names_epoch_batch_and_images_and_keeps_last_pt(tmp_path):
    loop = FakeLoop(tmp_path / "nan", epochs=3, losses={(1, 2): float("nan")})
    with pytest.raises(NonFiniteLossError) as info:
        loop.train()
    message = str(info.value)
    assert "non-finite loss (loss=nan)" in message and "at epoch 1, batch 2 (global step 6)" in message
    assert "img2a.jpg" in message and "img2b.jpg" in message and "img1a.jpg" not in message
    assert f"{loop.last} (epoch 0) is intact" in message
    assert torch_safe_load(loop.last)["epoch"] == 0


def test_last_and_best_are_written_atomically_each_epoch(tmp_path, monkeypatch):
    loop = FakeLoop(tmp_path / "save", epochs=2)
    loop.setup()
    loop.fit()
    assert torch_safe_load(loop.last)["epoch"] == 1
    assert torch_safe_load(loop.best)["epoch"] in (0, 1)
    assert sorted(p.name for p in loop.weights_dir.iterdir()) == ["best.pt", "last.pt"], "no temporary files left"
    before = loop.last.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        loop.save_epoch({"epoch": 9}, 9, True, improved=True)
    assert loop.last.read_bytes() == before, "a failed write leaves the previous last.pt intact"
    assert sorted(p.name for p in loop.weights_dir.iterdir()) == ["best.pt", "last.pt"]


@pytest.mark.parametrize("world_size", [1, 2])
def test_callback_stop_is_immediate_alone_and_at_epoch_end_under_ddp(tmp_path, world_size):
    callbacks, seen = Callbacks(), []

    def stop(*args) -> None:
        seen.append(args[1])
        callbacks.stop_training = True

    callbacks.register_action("on_train_batch_end", callback=stop)
    loop = FakeLoop(tmp_path / f"stop{world_size}", epochs=3, callbacks=callbacks)
    loop.setup()
    loop.world_size = world_size  # as a DDP rank sees it; without a process group the broadcast is the identity
    loop.fit()
    assert loop.state.interrupted and loop.state.epoch == 0
    if world_size == 1:
        assert seen == [0] and loop.evaluated == [] and not loop.last.exists()
    else:
        assert seen == list(range(BATCHES)) and loop.evaluated == [0] and loop.last.is_file()


def test_resume_continues_from_last_pt_like_an_uninterrupted_run(tmp_path):
    whole = FakeLoop(tmp_path / "whole", epochs=4).train()
    callbacks = Callbacks()
    callbacks.register_action("on_model_save", callback=lambda last, epoch, *a: setattr(
        callbacks, "stop_training", epoch == 1))
    first = FakeLoop(tmp_path / "parts", epochs=4, callbacks=callbacks)
    first.train()
    assert first.state.interrupted and first.evaluated == [0, 1]
    second = FakeLoop(tmp_path / "parts", epochs=4)
    resumed = second.train()
    assert second.state.start_epoch == 2 and second.evaluated == [2, 3]
    assert all(torch.allclose(resumed[k], whole[k]) for k in whole)


def test_callbacks_run_in_upstream_order_and_teardown_last(tmp_path):
    callbacks, calls = Callbacks(), []
    for hook in ("on_train_start", "on_train_epoch_start", "on_train_batch_start", "on_train_batch_end",
                 "on_train_epoch_end", "on_model_save", "teardown"):
        callbacks.register_action(hook, callback=lambda *a, _h=hook, **k: calls.append(_h))
    FakeLoop(tmp_path / "hooks", epochs=1, callbacks=callbacks).train()
    assert calls == (["on_train_start", "on_train_epoch_start"]
                     + ["on_train_batch_start", "on_train_batch_end"] * BATCHES
                     + ["on_train_epoch_end", "on_model_save", "teardown"])
