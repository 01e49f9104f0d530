"""Each built-in callback's behaviour."""
from __future__ import annotations

import math

import pytest

from decltrain.callbacks import EarlyStopping, GradientClipping, LearningRateMonitor, ModelCheckpoint
from decltrain.callbacks.gradient_clipping import total_norm
from tests.helpers.trainers import make_trainer
from decltrain.trainer.engine import checkpoint
from decltrain.trainer.errors import UserError


class FakeTrainer:
    def __init__(self) -> None:
        self.should_stop = False
        self.epoch = 0


def feed(stopper: EarlyStopping, values: list[float]) -> int | None:
    """Returns the 1-based validation at which the stopper asked to stop."""
    trainer = FakeTrainer()
    for index, value in enumerate(values, start=1):
        stopper.on_validation_end(trainer, {"val/loss": value})
        if trainer.should_stop:
            return index
    return None


def test_early_stopping_patience():
    assert feed(EarlyStopping(patience=2), [1.0, 0.9, 0.95, 0.91, 0.8]) == 4
    assert feed(EarlyStopping(patience=3), [1.0, 0.9, 0.95, 0.91, 0.8]) is None


def test_early_stopping_min_delta_ignores_small_gains():
    assert feed(EarlyStopping(patience=2, min_delta=0.05), [1.0, 0.98, 0.97]) == 3
    assert feed(EarlyStopping(patience=2, min_delta=0.01), [1.0, 0.98, 0.97]) is None


def test_early_stopping_max_mode_and_state_round_trip():
    stopper = EarlyStopping(monitor="val/loss", mode="max", patience=1)
    assert feed(stopper, [0.5, 0.6, 0.55]) == 3
    restored = EarlyStopping(mode="max", patience=1)
    restored.load_state_dict(stopper.state_dict())
    assert (restored.best, restored.wait) == (0.6, 1)


def test_early_stopping_stops_on_non_finite_metric():
    assert feed(EarlyStopping(patience=10), [1.0, math.nan]) == 2
    assert feed(EarlyStopping(patience=10), [1.0, math.inf]) == 2


def test_unknown_monitor_lists_the_metrics():
    with pytest.raises(UserError, match=r"monitor='val/accuracy'.*val/loss"):
        EarlyStopping(monitor="val/accuracy").on_validation_end(FakeTrainer(), {"val/loss": 1.0})


def test_checkpoint_keeps_best_and_last(tmp_path):
    scores = iter([0.5, 0.8, 0.6, 0.9, 0.7])
    ckpt = ModelCheckpoint(monitor="val/acc", mode="max", save_top_k=2)

    trainer = make_trainer(tmp_path, callbacks={"model_checkpoint": ckpt}, max_epochs=5, limit_train_batches=1,
                           validate_on_start=False)
    trainer.evaluate = lambda loader, split: {"val/acc": next(scores), "val/loss": 0.0}
    trainer.fit()
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["best.ckpt", "epoch=002-step=2.ckpt", "epoch=004-step=4.ckpt", "last.ckpt"]
    assert [score for score, _ in ckpt.top_k] == [0.9, 0.8]
    best = checkpoint.load(tmp_path / "checkpoints" / "best.ckpt")
    last = checkpoint.load(tmp_path / "checkpoints" / "last.ckpt")
    assert best["progress"]["global_step"] == 4
    assert last["progress"] == {"epoch": 5, "batch_idx": 0, "global_step": 5}


def test_checkpoint_min_mode_and_every_n_train_steps(tmp_path):
    ckpt = ModelCheckpoint(monitor="val/loss", mode="min", every_n_train_steps=3, every_n_epochs=100)
    trainer = make_trainer(tmp_path, callbacks={"model_checkpoint": ckpt}, max_epochs=1, limit_train_batches=7)
    trainer.fit()
    last = checkpoint.load(tmp_path / "checkpoints" / "last.ckpt")
    assert last["progress"] == {"epoch": 0, "batch_idx": 6, "global_step": 6}
    assert not (tmp_path / "checkpoints" / "best.ckpt").exists()  # every_n_epochs=100: no epoch save


def test_a_checkpoint_callback_answers_before_fit(tmp_path):
    """`best_path` is None until a best exists in a known folder: `dirpath`, or the run's once fit starts."""
    state = {"top_k": [[0.9, "epoch=001-step=16.ckpt"]], "best": None}  # as a resumed run loads it
    given, default = ModelCheckpoint(dirpath=str(tmp_path / "mine")), ModelCheckpoint()
    assert (given.dir, given.best_path, default.dir, default.best_path) == (tmp_path / "mine", None, None, None)
    given.load_state_dict(state)
    default.load_state_dict(state)
    assert (given.best_path, default.best_path) == (tmp_path / "mine" / "best.ckpt", None)
    fresh = ModelCheckpoint()
    make_trainer(tmp_path / "run", callbacks={"model_checkpoint": fresh}, max_epochs=1).fit()
    assert fresh.best_path == tmp_path / "run" / "checkpoints" / "best.ckpt" and fresh.best_path.is_file()


def test_fast_dev_run_writes_no_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, callbacks={"model_checkpoint": ModelCheckpoint()}, fast_dev_run=True)
    trainer.fit()
    assert not (tmp_path / "checkpoints").exists()


class NormProbe(GradientClipping):
    """Records the gradient norm after clipping, where the optimizer will see it."""
    def on_before_optimizer_step(self, trainer):
        super().on_before_optimizer_step(trainer)
        self.after = total_norm([p for p in trainer.model.parameters() if p.grad is not None]).item()


def test_clipping_by_norm_bounds_the_norm(tmp_path):
    probe = NormProbe(value=0.01, algorithm="norm")
    trainer = make_trainer(tmp_path, callbacks={"clip": probe}, max_epochs=1, limit_train_batches=2)
    trainer.fit()
    assert probe.after == pytest.approx(0.01, rel=1e-4)


def test_clipping_by_value_bounds_each_element(tmp_path):
    bounds = []

    class ValueProbe(GradientClipping):
        def on_before_optimizer_step(self, trainer):
            super().on_before_optimizer_step(trainer)
            bounds.append(max(p.grad.abs().max().item() for p in trainer.model.parameters()))

    trainer = make_trainer(tmp_path, callbacks={"clip": ValueProbe(value=0.001, algorithm="value")},
                           max_epochs=1, limit_train_batches=2)
    trainer.fit()
    assert max(bounds) <= 0.001 + 1e-9


class MemoryLogger:
    def __init__(self) -> None:
        self.records: list[tuple[str, float, int]] = []

    def log_metrics(self, metrics, step):
        self.records += [(name, value, step) for name, value in metrics.items()]

    def flush(self): ...


def test_grad_norm_and_lr_logged_on_logging_steps(tmp_path):
    logger = MemoryLogger()
    trainer = make_trainer(tmp_path, callbacks={"clip": GradientClipping(), "lr": LearningRateMonitor()},
                           max_epochs=1, limit_train_batches=6, log_every_n_steps=3)
    trainer.loggers = {"logger": logger}
    trainer.fit()
    norm_steps = [step for name, _, step in logger.records if name == "train/grad_norm"]
    lr_values = [value for name, value, _ in logger.records if name == "train/lr"]
    assert norm_steps == [3, 6]
    assert lr_values and all(value == pytest.approx(0.05) for value in lr_values)
    assert [step for name, _, step in logger.records if name == "train/loss"] == [3, 6]


def test_clipping_rejects_bad_settings():
    with pytest.raises(UserError, match="algorithm"):
        GradientClipping(value=1.0, algorithm="l3")
    with pytest.raises(UserError, match="positive"):
        GradientClipping(value=-1.0)


def test_plain_progress_lines_come_at_most_every_few_seconds(tmp_path, caplog, monkeypatch):
    """Without a terminal, a short run logging every step prints its first line and then one per interval."""
    from decltrain.callbacks import progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    bar = progress.RichProgressBar()
    trainer = make_trainer(tmp_path, callbacks={"progress_bar": bar}, max_epochs=1, limit_train_batches=16,
                           log_every_n_steps=1)
    bar.on_train_epoch_start(trainer)
    with caplog.at_level("INFO", logger="decltrain"):
        for batch in range(1, 17):  # a second per step
            now[0] = float(batch - 1)
            trainer.progress.batch = trainer.progress.step = batch
            trainer.should_log = True
            bar.on_train_batch_end(trainer)
    lines = [record.getMessage() for record in caplog.records if "batch" in record.getMessage()]
    assert [line.split()[3] for line in lines] == ["1/16", "11/16"]  # at 0 s, then 10 s later
