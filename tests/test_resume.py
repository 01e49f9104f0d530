"""Exact resume, preemption, crash safety, init_from and non-finite losses."""
from __future__ import annotations

import math
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from decltrain.callbacks import EarlyStopping, ModelCheckpoint
from decltrain.trainer.engine.callback import Callback
from tests.helpers.callbacks import SignalAtStep
from tests.helpers.commands import run_train
from tests.helpers.data import synthetic_splits
from tests.helpers.resume import assert_bit_identical, stopped_then_resumed
from tests.helpers.trainers import TinyNet, make_trainer
from decltrain.trainer.engine import checkpoint
from decltrain.trainer.errors import NonFiniteLoss, Preempted, UserError
from decltrain.trainer.engine.scheduling import LRSchedule
from decltrain.trainer.runs import layout, resume


def stateful_trainer(run_dir: Path, extra: dict | None = None, max_epochs: int = 4, log_every_n_steps: int = 50):
    """Adam, a step scheduler, dropout, early stopping and checkpoints: all state that must survive."""
    callbacks = {"model_checkpoint": ModelCheckpoint(monitor="val/loss", mode="min"),
                 "early_stopping": EarlyStopping(patience=100), **(extra or {})}
    return make_trainer(run_dir, callbacks=callbacks, max_epochs=max_epochs, seed=7, log_every_n_steps=log_every_n_steps,
                        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
                        schedule=lambda optimizer: LRSchedule(optimizer, torch.optim.lr_scheduler.StepLR(
                            optimizer, step_size=5, gamma=0.9), interval="step", warmup_steps=3))


def weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("stop_step", [16, 23], ids=["epoch_boundary", "mid_epoch"])
def test_resume_after_sigterm_is_bit_identical(tmp_path, stop_step):
    reference = stateful_trainer(tmp_path / "ref")
    reference.fit()

    resumed = stopped_then_resumed(lambda extra: stateful_trainer(tmp_path / "run", extra=extra),
                                   tmp_path / "run", stop_step)
    assert resumed.global_step == reference.global_step == 64
    assert_bit_identical(weights(resumed), weights(reference))
    assert resumed.callbacks["early_stopping"].state_dict() == reference.callbacks["early_stopping"].state_dict()


def test_sigint_also_stops_at_a_step_and_saves(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the test runs as a background job
    trainer = stateful_trainer(tmp_path, extra={"signal": SignalAtStep(5, signal.SIGINT)})
    with pytest.raises(Preempted) as stop:
        trainer.fit()
    assert stop.value.signum == signal.SIGINT
    assert checkpoint.load(tmp_path / "checkpoints" / "last.ckpt")["progress"]["global_step"] == 5
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored after fit


def test_second_ctrl_c_aborts_at_once(tmp_path):
    class DoubleInterrupt(Callback):
        def on_train_batch_end(self, trainer):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

    trainer = stateful_trainer(tmp_path, extra={"signal": DoubleInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert trainer.global_step == 2


def _write_checkpoints_forever(path: str) -> None:
    # A forked child of a process whose OpenMP threads ran (earlier tests) hangs in its first
    # parallel region (libgomp is not fork-safe): this writer runs torch on one thread.
    torch.set_num_threads(1)
    model = TinyNet()
    step = 0
    while True:
        step += 1
        checkpoint.save_atomic({"model": model.state_dict(), "progress": {"global_step": step},
                                "padding": torch.randn(200_000)}, Path(path))


def test_kill_9_while_writing_never_breaks_last_ckpt(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    context = multiprocessing.get_context("fork")
    rng = random.Random(0)
    steps_seen = []
    for _ in range(24):
        writer = context.Process(target=_write_checkpoints_forever, args=(str(path),))
        writer.start()
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        if path.exists():  # the very first kill may come before any write finished
            steps_seen.append(checkpoint.load(path)["progress"]["global_step"])
    assert len(steps_seen) >= 20
    # Leftover temporary files are what a killed writer leaves; the next run removes them.
    trainer = make_trainer(tmp_path, callbacks={"ckpt": ModelCheckpoint()}, max_epochs=1, limit_train_batches=1)
    trainer.fit()
    assert not list(path.parent.glob(".*.tmp"))


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_good_checkpoint(tmp_path):
    class PoisonAfter(Callback):
        def on_train_batch_end(self, trainer):
            if trainer.global_step == 20:  # epoch 2: after the epoch-1 checkpoint
                with torch.no_grad():
                    trainer.model.net[0].weight.fill_(math.inf)

    trainer = stateful_trainer(tmp_path, extra={"poison": PoisonAfter()}, log_every_n_steps=4)
    with pytest.raises(NonFiniteLoss, match="at step 21"):
        trainer.fit()
    last = checkpoint.load(tmp_path / "checkpoints" / "last.ckpt")
    assert last["progress"]["global_step"] == 16
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_non_finite_loss_skip_mode_skips_only_bad_steps(tmp_path):
    splits = synthetic_splits()
    inputs, labels = splits.train.tensors
    inputs[:16] = math.nan  # the first batch of the first epoch's order is unknown: poison one sample per batch
    poisoned = torch.zeros(len(inputs), dtype=torch.bool)
    poisoned[:16] = True
    trainer = make_trainer(tmp_path, splits=splits, max_epochs=1, nonfinite_loss="skip")
    trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert 0 < trainer.global_step < 16  # some of the 16 batches held a NaN sample and were skipped


def test_init_from_loads_weights_only(tmp_path):
    source = make_trainer(tmp_path / "src", max_epochs=1)
    source.fit()
    source.save_checkpoint(tmp_path / "src.ckpt")
    target = make_trainer(tmp_path / "dst", init_from=str(tmp_path / "src.ckpt"), max_steps=0)
    target.fit()  # no step: the weights are where fit starts
    assert_bit_identical(weights(target), weights(source))
    assert not target.optimizer.state  # a fresh optimizer
    assert target.global_step == 0


def test_init_from_not_strict_skips_and_reports_a_new_head(tmp_path, caplog):
    source = make_trainer(tmp_path / "src", max_epochs=1, limit_train_batches=1)
    source.save_checkpoint(tmp_path / "src.ckpt")
    five_classes = synthetic_splits(classes=5)
    with pytest.raises(UserError, match=r"net.3.weight: checkpoint \(3, 32\) vs model \(5, 32\)"):
        make_trainer(tmp_path / "a", splits=five_classes, init_from=str(tmp_path / "src.ckpt"), max_steps=0).fit()
    with caplog.at_level("INFO", logger="decltrain"):
        target = make_trainer(tmp_path / "b", splits=five_classes, init_from=str(tmp_path / "src.ckpt"),
                              init_strict=False, max_steps=0)
        target.fit()
    assert "skipped (shape differs): net.3.weight, net.3.bias" in caplog.text
    assert torch.equal(target.model.net[0].weight, source.model.net[0].weight)


# ------------------------------------------------------------------------- the installed command
# (Resuming after SIGTERM, kill -9 and under DDP, as the user does: tests/test_resume_matrix.py.)
MNIST_SHORT = ["config=mnist_cnn", "trainer.max_epochs=2", "trainer.limit_train_batches=30",
               "callbacks.early_stopping=null", "callbacks.progress_bar=null"]


@pytest.mark.slow
def test_resume_from_a_truncated_file_names_it(tmp_path, data_dir):
    bad = tmp_path / "checkpoints" / "last.ckpt"
    make_trainer(tmp_path / "source", max_epochs=1, limit_train_batches=1).save_checkpoint(bad)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    result = run_train(*MNIST_SHORT, f"resume={bad}", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 2
    assert f"checkpoint {bad} is truncated or corrupt" in result.stdout + result.stderr
    assert bad.stat().st_size == len(data) // 3  # nothing overwrote the user's file


def test_one_reading_of_checkpoint_names_for_resume_and_ckpt(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    for folder in (run, other):
        layout.checkpoints(folder).mkdir(parents=True)
        layout.last(folder).write_bytes(b"")
    (layout.checkpoints(run) / layout.BEST).write_bytes(b"")
    assert layout.find_checkpoint("best", run, "ckpt") == layout.checkpoints(run) / layout.BEST
    assert layout.find_checkpoint("last", run, "ckpt") == layout.find_checkpoint("auto", run, "ckpt") == layout.last(run)
    assert layout.find_checkpoint("latest", run, "resume") == layout.last(run)  # run_dir already is the latest run
    assert layout.find_checkpoint(str(other), run, "resume") == layout.last(other)  # a folder: its last.ckpt
    assert layout.find_checkpoint(layout.LAST, other, "ckpt") == layout.last(other)  # a name inside checkpoints/
    with pytest.raises(UserError, match="resume=latest found no run"):
        layout.find_checkpoint("latest", tmp_path / "fresh", "resume")
    # `resume=auto` starts fresh in a folder without a last checkpoint; `ckpt=auto` needs one
    assert resume.checkpoint("auto", tmp_path / "fresh") is None and resume.checkpoint(None, run) is None
    with pytest.raises(UserError, match="has no checkpoint"):
        layout.find_checkpoint("auto", tmp_path / "fresh", "ckpt")
    # the resolver of hydra.run.dir: a checkpoint inside a run folder continues that run
    assert resume.run_dir(str(layout.last(other)), "fresh") == str(other)
    assert resume.run_dir("latest", str(tmp_path / "new")) == str(run)  # "run" sorts after "other", as timestamps do


@pytest.mark.slow
def test_resume_of_nothing_is_a_clear_error(tmp_path, data_dir):
    for target, expected in ((tmp_path / "nope.ckpt", "no such checkpoint file or run folder"),
                             ("latest", "resume=latest found no run")):
        result = run_train(*MNIST_SHORT, f"resume={target}", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
        assert result.returncode == 2
        assert expected in result.stdout + result.stderr
