"""The training loop on synthetic data: learning, limits, accumulation, evaluation."""
from __future__ import annotations

import pytest
import torch

from decltrain.trainer.engine.callback import Callback
from torch import nn

from tests.helpers.data import synthetic_splits
from tests.helpers.trainers import TinyNet, make_trainer
from decltrain.trainer.errors import UserError
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.scheduling import LRSchedule
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.tasks.classification import Classification


class EventRecorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.steps_at_batch_end: list[int] = []
        self.modes: list[bool] = []

    def on_fit_start(self, trainer): self.events.append("fit_start")
    def on_train_epoch_start(self, trainer): self.events.append("epoch_start")
    def on_before_optimizer_step(self, trainer):
        self.modes.append(trainer.model.training)
        # gradients are there and final when this event fires
        assert all(p.grad is not None for p in trainer.model.parameters())
    def on_train_batch_end(self, trainer): self.steps_at_batch_end.append(trainer.global_step)
    def on_validation_end(self, trainer, metrics): self.events.append("validation_end")
    def on_train_epoch_end(self, trainer): self.events.append("epoch_end")
    def on_fit_end(self, trainer): self.events.append("fit_end")


def test_fit_learns_and_reports_validation_metrics(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=5)
    trainer.fit()
    assert trainer.callback_metrics["val/acc"] > 0.9
    assert trainer.test()["test/acc"] > 0.9
    assert trainer.global_step == 5 * 16  # 256 samples / batch 16, five epochs


def test_events_fire_in_documented_order(tmp_path):
    recorder = EventRecorder()
    trainer = make_trainer(tmp_path, callbacks={"rec": recorder}, max_epochs=2, limit_train_batches=3)
    trainer.fit()
    assert recorder.events == ["fit_start", "epoch_start", "validation_end", "epoch_end",
                               "epoch_start", "validation_end", "epoch_end", "fit_end"]
    assert recorder.steps_at_batch_end == [1, 2, 3, 4, 5, 6]
    assert all(recorder.modes)  # model.train() during training steps


def test_max_steps_stops_mid_epoch(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=10, max_steps=5)
    trainer.fit()
    assert trainer.global_step == 5


def test_limits_as_count_and_fraction(tmp_path):
    by_count = make_trainer(tmp_path, max_epochs=1, limit_train_batches=4)
    by_count.fit()
    assert by_count.global_step == 4
    by_fraction = make_trainer(tmp_path, max_epochs=1, limit_train_batches=0.5)
    by_fraction.fit()
    assert by_fraction.global_step == 8


def test_fast_dev_run_runs_one_batch_of_each(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=7, fast_dev_run=True)
    trainer.fit()
    assert (trainer.epoch, trainer.global_step) == (1, 1)


def test_check_val_every_n_epoch(tmp_path):
    recorder = EventRecorder()
    trainer = make_trainer(tmp_path, callbacks={"rec": recorder}, max_epochs=4, check_val_every_n_epoch=2,
                           limit_train_batches=1)
    trainer.fit()
    assert recorder.events.count("validation_end") == 2


def test_accumulation_steps_once_per_group_and_steps_the_last_partial_group(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=5, accumulate_grad_batches=2)
    trainer.fit()
    assert trainer.global_step == 3  # groups of 2, 2 and the partial 1


def test_accumulation_matches_one_big_batch(tmp_path):
    """2 x 8 accumulated gives the gradient of one batch of 16 (no dropout, same samples)."""
    def one_step(batch_size: int, accumulate: int) -> torch.Tensor:
        splits = synthetic_splits(n=64, batch_size=batch_size)
        trainer = make_trainer(tmp_path, splits=splits, max_epochs=1, limit_train_batches=accumulate,
                               accumulate_grad_batches=accumulate)
        trainer.model.net[2].p = 0.0
        trainer.fit()
        return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])

    torch.testing.assert_close(one_step(8, 2), one_step(16, 1), rtol=1e-5, atol=1e-6)


def test_evaluation_is_no_grad_and_in_eval_mode(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=1)
    seen = []
    trainer.model.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    trainer.evaluate(trainer.val_loader, "val")
    assert seen and all(mode == (False, False) for mode in seen)


def test_loss_averages_over_unequal_batches(tmp_path):
    """Validation loss is the per-sample mean, also when the last batch is smaller."""
    splits = synthetic_splits(n=64, batch_size=24)  # val has 16 samples -> with eval batch 10: 10 + 6
    splits.loader = type(splits.loader)(batch_size=24, eval_batch_size=10)
    trainer = make_trainer(tmp_path, splits=splits, max_epochs=1)
    metrics = trainer.evaluate(trainer.val_loader, "val")
    inputs, targets = splits.val.tensors
    trainer.model.eval()
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(trainer.model(inputs), targets).item()
        expected_acc = (trainer.model(inputs).argmax(1) == targets).float().mean().item()
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["val/acc"] == pytest.approx(expected_acc)


def test_warmup_then_scheduler(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=6)
    optimizer = trainer.optimizer
    step_lr = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    trainer.lr_schedule = LRSchedule(optimizer, step_lr, interval="step", warmup_steps=4)
    lrs = [optimizer.param_groups[0]["lr"]]
    for step in range(1, 7):
        optimizer.step()  # no gradients: changes nothing, but the schedule follows optimizer steps, as in a run
        trainer.lr_schedule.after_optimizer_step(step)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.0125, 0.025, 0.0375, 0.05, 0.05, 0.025, 0.0125])


def test_plateau_needs_a_monitor(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(trainer.optimizer)
    with pytest.raises(UserError, match="scheduler.monitor"):
        LRSchedule(trainer.optimizer, plateau)


def test_invalid_settings_name_the_key(tmp_path):
    with pytest.raises(UserError, match="trainer.max_epochs=0"):
        make_trainer(tmp_path, max_epochs=0)
    with pytest.raises(UserError, match="bf16-mixed"):
        make_trainer(tmp_path, precision="16-mixed")


def test_a_trainer_without_an_optimizer_evaluates_and_refuses_to_train(tmp_path):
    trainer = Trainer(TrainerSettings(accelerator="cpu"), TinyNet(), synthetic_splits(),
                      Classification(nn.CrossEntropyLoss(), "multiclass", 3), run_dir=tmp_path)
    assert {"val/loss", "val/acc"} <= set(trainer.evaluate(trainer.val_loader, "val"))
    with pytest.raises(UserError, match="built without an optimizer"):
        trainer.fit()


class RecordingLogger:
    """Keeps what the Trainer logs: (step, name) of every scalar."""

    def __init__(self) -> None:
        self.logged: list[tuple[int, str]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.logged.extend((step, name) for name in metrics)

    def __getattr__(self, name: str):  # every other logger method does nothing here
        return lambda *args, **kwargs: None


def test_a_fresh_run_validates_before_its_first_step_without_an_event_or_a_changed_result(tmp_path):
    recorder, logger = EventRecorder(), RecordingLogger()
    trainer = make_trainer(tmp_path / "a", callbacks={"rec": recorder}, loggers={"rec": logger}, max_epochs=2)
    trainer.fit()
    val_steps = [step for step, name in logger.logged if name == "val/acc"]
    assert val_steps == [0, 16, 32]  # the untrained model's point starts the curve
    assert recorder.events.count("validation_end") == 2  # monitors and checkpoints never see it
    without = make_trainer(tmp_path / "b", max_epochs=2, validate_on_start=False)
    without.fit()
    for mine, theirs in zip(trainer.model.state_dict().values(), without.model.state_dict().values()):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize(("batches", "accumulate", "interval"), [(171, 1, 8), (16, 1, 1), (5000, 1, 50), (171, 4, 2)])
def test_the_default_logging_interval_gives_about_20_points_per_epoch(batches, accumulate, interval):
    settings = TrainerSettings(accumulate_grad_batches=accumulate)
    assert settings.logging_interval(batches) == interval
    assert TrainerSettings(log_every_n_steps=7).logging_interval(batches) == 7
