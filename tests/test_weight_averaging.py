"""EMA and SWA: the average is what validation, checkpoints and the test see; resume stays exact; DDP."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from decltrain.callbacks import EMA, SWA, EarlyStopping, ModelCheckpoint
from decltrain.trainer.engine.callback import Callback
from decltrain.trainer.engine import checkpoint
from tests.helpers.data import synthetic_splits
from tests.helpers.distributed import on_ranks
from tests.helpers.resume import assert_bit_identical, stopped_then_resumed
from tests.helpers.trainers import make_trainer


class RecordWeights(Callback):
    """The raw weights after every optimizer step."""

    def __init__(self) -> None:
        self.history: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer) -> None:
        self.history.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})


def ema_trainer(run_dir: Path, extra: dict | None = None, **kwargs):
    callbacks = {"model_checkpoint": ModelCheckpoint(monitor="val/acc", every_n_train_steps=kwargs.pop("every", None)),
                 "early_stopping": EarlyStopping(patience=100), "ema": EMA(decay=0.8, warmup=True),
                 **(extra or {})}
    return make_trainer(run_dir, callbacks=callbacks, max_epochs=kwargs.pop("max_epochs", 2), **kwargs)


def test_ema_is_the_hand_computed_average_and_what_validation_and_checkpoints_hold(tmp_path):
    recorder = RecordWeights()
    trainer = ema_trainer(tmp_path, extra={"recorder": recorder})
    trainer.fit()
    expected = {k: v.float().clone() for k, v in recorder.history[0].items()}
    for n, raw in enumerate(recorder.history[1:], start=1):
        decay = min(0.8, (1 + n) / (10 + n))
        for key in expected:
            expected[key] = expected[key] * decay + raw[key].float() * (1 - decay)
    state = checkpoint.load(tmp_path / "checkpoints" / "last.ckpt")
    for key, value in expected.items():
        torch.testing.assert_close(state["model"][key].float(), value)
    # The raw weights are kept for training, and they differ from the average.
    assert_bit_identical(state["training_weights"], recorder.history[-1])
    assert not torch.equal(state["model"]["net.0.weight"], state["training_weights"]["net.0.weight"])
    # The logged val/acc is that of the averaged weights, evaluated by hand.
    fresh = make_trainer(tmp_path / "by_hand")
    checkpoint.load_model_weights(fresh.model, state["model"], "last.ckpt")
    assert fresh.evaluate(fresh.val_loader, "val") == pytest.approx(trainer.callback_metrics)
    # At the end of fit the model holds the average (the final test uses it).
    assert_bit_identical(trainer.model.state_dict(), state["model"])


@pytest.mark.parametrize("stop_step", [16, 21], ids=["epoch_boundary", "mid_epoch"])
def test_ema_resume_is_bit_identical(tmp_path, stop_step):
    reference = ema_trainer(tmp_path / "ref", val_check_interval=5)
    reference.fit()
    resumed = stopped_then_resumed(lambda extra: ema_trainer(tmp_path / "run", extra=extra, val_check_interval=5),
                                   tmp_path / "run", stop_step)
    assert_bit_identical(resumed.model.state_dict(), reference.model.state_dict())
    for name in ("last.ckpt", "best.ckpt"):
        ours, theirs = (checkpoint.load(folder / "checkpoints" / name) for folder in (tmp_path / "run", tmp_path / "ref"))
        assert_bit_identical(ours["model"], theirs["model"])
        assert_bit_identical(ours["training_weights"], theirs["training_weights"])


def test_swa_averages_epoch_ends_with_its_own_lr_and_resumes_exactly(tmp_path):
    def swa_trainer(run_dir: Path, extra: dict | None = None):
        callbacks = {"model_checkpoint": ModelCheckpoint(monitor="val/acc"),
                     "swa": SWA(swa_lr=0.01, swa_epoch_start=2, annealing_epochs=1), **(extra or {})}
        return make_trainer(run_dir, callbacks=callbacks, max_epochs=4)

    recorder = RecordWeights()
    reference = swa_trainer(tmp_path / "ref", {"recorder": recorder})
    reference.fit()
    assert reference.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    epoch_ends = [recorder.history[i] for i in (31, 47, 63)]  # 16 steps per epoch, epochs 2..4
    state = checkpoint.load(tmp_path / "ref" / "checkpoints" / "last.ckpt")
    for key in state["model"]:
        torch.testing.assert_close(state["model"][key], sum(w[key] for w in epoch_ends) / 3)

    resumed = stopped_then_resumed(lambda extra: swa_trainer(tmp_path / "run", extra), tmp_path / "run", 40)
    assert_bit_identical(resumed.model.state_dict(), reference.model.state_dict())


class BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_swa_recomputes_batchnorm_statistics_for_the_average(tmp_path):
    trainer = make_trainer(tmp_path, callbacks={"swa": SWA(swa_lr=0.01, swa_epoch_start=1)}, max_epochs=2,
                           model=BatchNormNet(), optimizer=lambda params: torch.optim.SGD(params, lr=0.05))
    trainer.fit()
    bn = trainer.model.net[1]
    features = torch.stack([trainer.splits.train[i][0] for i in range(len(trainer.splits.train))])
    hidden = trainer.model.net[0](features)
    torch.testing.assert_close(bn.running_mean, hidden.mean(0), atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------------------------------ DDP
def _ddp_ema(run_dir: Path, devices: int) -> dict:
    trainer = ema_train_blobs(run_dir, devices=devices, batch_size=32)
    return {"val": trainer.callback_metrics, "model": checkpoint.unwrap(trainer.model).state_dict()}


def ema_train_blobs(run_dir: Path, batch_size: int, **kwargs):
    splits = synthetic_splits(n=256, batch_size=batch_size)
    trainer = ema_trainer(run_dir, splits=splits, val_check_interval=3, **kwargs)
    for module in trainer.model.modules():  # ranks draw different dropout masks: none here
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    trainer.fit()
    return trainer


@pytest.mark.slow
def test_ema_under_ddp_matches_one_process(tmp_path):
    one = ema_train_blobs(tmp_path / "one", batch_size=64)
    for result in on_ranks(_ddp_ema, tmp_path / "two"):
        assert result["val"] == pytest.approx(one.callback_metrics, abs=1e-5)
        for key, value in one.model.state_dict().items():
            torch.testing.assert_close(result["model"][key], value, atol=1e-5, rtol=1e-4)
    state = checkpoint.load(tmp_path / "two" / "checkpoints" / "last.ckpt")
    assert "training_weights" in state
