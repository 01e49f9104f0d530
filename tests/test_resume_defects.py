"""The defects of issue 12, each pinned by the behaviour that was wrong (Trainer API, synthetic data)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from decltrain.callbacks import EarlyStopping, ModelCheckpoint
from decltrain.trainer.engine.callback import Callback
from decltrain.trainer.engine import checkpoint, distributed
from decltrain.trainer.runs import config_drift
from decltrain.trainer.errors import UserError
from decltrain.trainer.tracking.loggers import Logger
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.scheduling import LRSchedule
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.tasks.classification import Classification
from tests.helpers.data import synthetic_splits
from tests.helpers.distributed import on_ranks
from tests.helpers.trainers import TinyNet, make_trainer

STEPS_PER_EPOCH = 16  # synthetic_splits: 256 samples in batches of 16


def last_state(run_dir: Path) -> dict:
    return checkpoint.load(run_dir / "checkpoints" / "last.ckpt")


def test_last_ckpt_written_at_an_epoch_end_knows_the_best_of_that_epoch(tmp_path):
    trainer = make_trainer(tmp_path, callbacks={"model_checkpoint": ModelCheckpoint(monitor="val/loss")},
                           max_epochs=1)
    trainer.fit()
    saved = last_state(tmp_path)["callbacks"]["model_checkpoint"]
    assert [name for _, name in saved["top_k"]] == [f"epoch=001-step={STEPS_PER_EPOCH}.ckpt"]
    assert saved["best"]["global_step"] == STEPS_PER_EPOCH and "val/loss" in saved["best"]


def test_a_stop_inside_an_epoch_leaves_the_epoch_unfinished(tmp_path):
    scheduler_steps = []

    class CountEpochEnds(Callback):
        def on_train_epoch_end(self, trainer):
            scheduler_steps.append(trainer.epoch)

    callbacks = {"model_checkpoint": ModelCheckpoint(monitor="val/loss", mode="min"), "count": CountEpochEnds()}
    stopped = make_trainer(tmp_path / "run", callbacks=callbacks, max_epochs=1, max_steps=5)
    stopped.fit()
    assert scheduler_steps == []  # no epoch end (validation, per-epoch scheduler) after a partial epoch
    assert last_state(tmp_path / "run")["progress"] == {"epoch": 0, "batch_idx": 5, "global_step": 5}

    resumed = make_trainer(tmp_path / "run", max_epochs=1)
    resumed.fit(tmp_path / "run" / "checkpoints" / "last.ckpt")
    reference = make_trainer(tmp_path / "ref", max_epochs=1)
    reference.fit()
    assert resumed.global_step == reference.global_step == STEPS_PER_EPOCH
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.parameters(), reference.model.parameters()))


def test_train_loss_under_accumulation_is_the_mean_of_the_group(tmp_path):
    micro_losses, logged = [], []

    class Record(Callback):
        def on_train_batch_end(self, trainer):
            logged.append(trainer.last_loss)

    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=6, accumulate_grad_batches=3,
                           log_every_n_steps=1, callbacks={"record": Record()})
    loss = trainer.task.loss

    def recorded(model, batch):
        value = loss(model, batch)
        micro_losses.append(float(value.detach()))
        return value

    trainer.task.loss = recorded
    trainer.fit()
    assert logged == pytest.approx([sum(micro_losses[:3]) / 3, sum(micro_losses[3:]) / 3], rel=1e-6)


def test_a_resumed_run_does_not_need_its_init_from_file(tmp_path):
    source = make_trainer(tmp_path / "src", max_epochs=1, limit_train_batches=1)
    source.save_checkpoint(tmp_path / "src.ckpt")
    finetuned = make_trainer(tmp_path / "run", callbacks={"model_checkpoint": ModelCheckpoint()}, max_epochs=1,
                             limit_train_batches=2, init_from=str(tmp_path / "src.ckpt"))
    finetuned.fit()
    (tmp_path / "src.ckpt").unlink()
    resumed = make_trainer(tmp_path / "run", max_epochs=2, limit_train_batches=2, init_from=str(tmp_path / "src.ckpt"))
    resumed.fit(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert resumed.global_step == 4


def test_ddp_in_one_process_is_refused(tmp_path):
    with pytest.raises(UserError, match="trainer.strategy=ddp needs several processes"):
        make_trainer(tmp_path, strategy="ddp")


def test_plateau_per_optimizer_step_is_refused():
    optimizer = torch.optim.SGD(TinyNet().parameters(), lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    with pytest.raises(UserError, match="set scheduler.interval=epoch"):
        LRSchedule(optimizer, plateau, interval="step", monitor="val/loss")


def test_a_skipped_step_closes_its_batch_events(tmp_path):
    splits = synthetic_splits()
    splits.train.tensors[0][::16] = math.nan  # one NaN sample in 16: some batches hold one
    events = []

    class Events(Callback):
        def on_train_batch_start(self, trainer):
            events.append("start")

        def on_train_batch_end(self, trainer):
            events.append("end")

    trainer = make_trainer(tmp_path, splits=splits, max_epochs=1, nonfinite_loss="skip",
                           callbacks={"events": Events()})
    trainer.fit()
    assert 0 < trainer.global_step < STEPS_PER_EPOCH
    assert events == ["start", "end"] * STEPS_PER_EPOCH


@pytest.mark.parametrize("callback", [ModelCheckpoint(monitor="val/mse"), EarlyStopping(monitor="val/mse")],
                         ids=["checkpoint", "early_stopping"])
def test_a_monitor_the_task_does_not_produce_fails_before_training(tmp_path, callback):
    with pytest.raises(UserError, match=r"monitor='val/mse' is not a validation metric.*val/acc"):
        make_trainer(tmp_path, callbacks={"cb": callback})


def test_a_scheduler_monitor_the_task_does_not_produce_fails_before_training(tmp_path):
    splits = synthetic_splits()
    model = TinyNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = LRSchedule(optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer), monitor="val/nope")
    with pytest.raises(UserError, match=r"scheduler.monitor='val/nope' is not a validation metric"):
        Trainer(TrainerSettings(accelerator="cpu"), model, splits, Classification(nn.CrossEntropyLoss(), "multiclass", 3),
                optimizer=optimizer, lr_schedule=schedule, run_dir=tmp_path)


SAVED = """
seed: 42
resume: null
model: {_target_: decltrain.models.MnistCNN, dropout: 0.25}
dataset: {_target_: decltrain.datasets.torchvision_images.build, root: /old/data, batch_size: 64}
optimizer: {_target_: torch.optim.Adam, lr: 0.001}
trainer: {max_epochs: 1}
callbacks: {early_stopping: {patience: 3}}
"""


def current(**changes: object) -> str:
    config = OmegaConf.create(SAVED)
    for key, value in changes.items():
        OmegaConf.update(config, key, value)
    return OmegaConf.to_yaml(config)


def test_config_drift_allows_the_same_config_and_warns_about_stop_conditions(caplog):
    config_drift.check(SAVED, current(), "last.ckpt")
    with caplog.at_level("WARNING", logger="decltrain"):
        config_drift.check(SAVED, current(**{"trainer.max_epochs": 3, "callbacks.early_stopping.patience": 9,
                                             "dataset.root": "/new/data", "resume": "x"}), "last.ckpt")
    assert "callbacks.early_stopping.patience (3 -> 9), dataset.root (/old/data -> /new/data), " \
           "trainer.max_epochs (1 -> 3)" in caplog.text


@pytest.mark.parametrize("key, value", [("model._target_", "decltrain.models.MLP"), ("dataset.batch_size", 32),
                                        ("seed", 1), ("optimizer._target_", "torch.optim.SGD")])
def test_config_drift_refuses_what_changes_the_training(key, value):
    with pytest.raises(UserError, match=rf"changes what was trained \({key}: .*trainer.init_from=last.ckpt"):
        config_drift.check(SAVED, current(**{key: value}), "last.ckpt")


# ----------------------------------------------------------------- nonfinite_loss=skip under DDP
def _skip_on_one_rank(run_dir: Path, devices: int) -> tuple[int, bool]:
    """Rank 1's loss is NaN at its 3rd step only: both ranks must skip that step, and only that one."""
    rank = distributed.rank()
    trainer = make_trainer(run_dir / f"rank{rank}", devices=devices, max_epochs=1, nonfinite_loss="skip", seed=3)
    loss, calls = trainer.task.loss, [0]

    def poisoned(model, batch):
        calls[0] += 1
        value = loss(model, batch)
        return value * math.nan if rank == 1 and calls[0] == 3 else value

    trainer.task.loss = poisoned
    trainer.fit()
    return trainer.global_step, all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())


@pytest.mark.slow
def test_skip_under_ddp_every_rank_skips_the_same_step(tmp_path):
    steps_per_rank = STEPS_PER_EPOCH // 2
    assert on_ranks(_skip_on_one_rank, tmp_path) == [(steps_per_rank - 1, True)] * 2


def test_the_report_pairs_each_value_with_its_model(tmp_path):
    """metrics.json: `best` is what best.ckpt scored (the value sweepers get), `last` where training ended."""
    from decltrain.trainer.commands.train_job import _report

    seen = {}

    class Curve(Logger):
        def log_metrics(self, metrics, step):
            if "val/loss" in metrics and step > 0:  # step 0: the untrained model, which no monitor sees
                seen[step] = metrics["val/loss"]

    checkpointer = ModelCheckpoint(monitor="val/loss", mode="max")
    trainer = make_trainer(tmp_path, callbacks={"model_checkpoint": checkpointer}, max_epochs=3,
                           loggers={"curve": Curve()})
    trainer.fit()
    report = _report(trainer, checkpointer, {"test/acc": 0.5})
    assert report["monitor"] == "val/loss" and report["test"] == {"model": "best", "test/acc": 0.5}
    best_step = max(seen, key=seen.get)
    assert best_step != 3 * STEPS_PER_EPOCH  # the last epoch is not the best one here
    assert (report["best"]["global_step"], report["best"]["val/loss"]) == (best_step, seen[best_step])
    assert report["last"]["global_step"] == 3 * STEPS_PER_EPOCH
    assert report["last"]["val/loss"] == seen[3 * STEPS_PER_EPOCH] == trainer.callback_metrics["val/loss"]
