"""Jobs that get a cluster's stop signal: checkpoint, requeue, continue in the same folder.

SLURM is not here; submitit's local executor is, and it runs a job exactly as on SLURM: the job
process installs submitit's signal handlers, and a requeue starts the job again from its pickle.
So these tests deliver the signals the way SLURM does (to the job process, during training) and
check what the run does with them.
"""
from __future__ import annotations

import json
import signal

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.commands import run_train

pytestmark = pytest.mark.slow  # every test runs the installed `train`

# A user's callback (the working directory is importable) that signals its own process once,
# after a given optimizer step: the requeued job resumes after that step, so it fires once.
SIGNAL_AT = '''
import os
import signal

from decltrain.callbacks import Callback


class SignalAt(Callback):
    def __init__(self, name: str, step: int) -> None:
        self.signum, self.step = getattr(signal, name), step

    def on_train_batch_end(self, trainer) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
'''

# Hydra's submitit launcher on this machine, with the toolkit's requeue (as configs/hydra/launcher/slurm.yaml).
LOCAL_LAUNCHER = '''
defaults:
  - submitit_local
_target_: hydra_plugins.decltrain.submitit_launcher.LocalLauncher
timeout_min: 10
'''

SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=10", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2"]


def test_preempted_and_timed_out_job_is_requeued_and_continues_its_run(tmp_path, data_dir):
    """SIGTERM (preemption) at step 3, USR2 (submitit's time-limit signal) at step 6, one run."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    (tmp_path / "signal_at.py").write_text(SIGNAL_AT)
    launcher = tmp_path / "conf" / "hydra" / "launcher" / "local_requeue.yaml"
    launcher.parent.mkdir(parents=True)
    launcher.write_text(LOCAL_LAUNCHER)
    result = run_train("-m", "--config-dir", "conf", "hydra/launcher=local_requeue", "config=mnist_cnn",
                       "+callbacks.preempt._target_=signal_at.SignalAt", "+callbacks.preempt.name=SIGTERM",
                       "+callbacks.preempt.step=3", "+callbacks.time_limit._target_=signal_at.SignalAt",
                       "+callbacks.time_limit.name=SIGUSR2", "+callbacks.time_limit.step=6", *SHORT,
                       cwd=tmp_path, env={"DATA_DIR": str(data_dir)}, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    (job,) = [folder for folder in sweep.iterdir() if folder.name[0].isdigit()]  # one folder, all attempts
    assert job.name == "0_mnist_cnn"
    log = (job / "train.log").read_text()
    assert "SIGTERM received" in log and "SIGUSR2 received" in log
    assert "epoch 1, batch 3, step 3" in log and "epoch 1, batch 6, step 6" in log
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["last"]["global_step"] == 10
    assert log.count("resumed from") == 2
    submitit_logs = "".join(path.read_text() for path in (sweep / ".submitit").rglob("*.err"))
    assert submitit_logs.count("Caught signal") == 2, submitit_logs[-3000:]
    (record,) = json.loads((sweep / "summary.json").read_text())
    assert record["status"] == "done" and record["folder"] == str(job)


def test_usr2_outside_submitit_checkpoints_and_exits_140(tmp_path, data_dir):
    """A plain `sbatch --signal=USR2@120 train ...` job: the same checkpoint, then exit 128 + 12."""
    (tmp_path / "signal_at.py").write_text(SIGNAL_AT)
    run_dir = tmp_path / "run"
    result = run_train("config=mnist_cnn", "+callbacks.limit._target_=signal_at.SignalAt",
                       "+callbacks.limit.name=SIGUSR2", "+callbacks.limit.step=4", f"hydra.run.dir={run_dir}",
                       "resume=auto", *SHORT, cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 128 + signal.SIGUSR2, result.stdout[-3000:] + result.stderr[-3000:]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["progress"]["global_step"] == 4


def test_resume_auto_continues_the_fixed_folder_and_extends_the_run(tmp_path, data_dir):
    """The documented use: the same command with a fixed folder, then with max_epochs raised."""
    run_dir = tmp_path / "R"
    common = ["config=mnist_cnn", f"hydra.run.dir={run_dir}", "resume=auto", "trainer.limit_train_batches=5",
              "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.log_every_n_steps=1"]
    first = run_train(*common, "trainer.max_epochs=1", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "resumed from" not in first.stdout + first.stderr  # no checkpoint yet: a fresh start
    assert json.loads((run_dir / "metrics.json").read_text())["last"]["global_step"] == 5
    second = run_train(*common, "trainer.max_epochs=2", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed from" in second.stdout + second.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["last"]["global_step"] == 10
    events = EventAccumulator(str(run_dir)).Reload()
    assert [event.step for event in events.Scalars("train/loss")] == list(range(1, 11))  # one run, no duplicates
    # val/ starts with the validation before training, at step 0; the resumed run does not repeat it
    assert [event.step for event in events.Scalars("val/acc")] == [0, 5, 10]


PARENT_SIGNAL = '''
import os
import signal

from decltrain.callbacks import Callback


class SignalParentAt(Callback):
    """In rank 0 of `train trainer.devices=2`: signals the `train` process that started the workers."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            os.kill(os.getppid(), signal.SIGUSR2)
'''


def test_usr2_to_the_process_that_started_ddp_workers_stops_them_with_a_checkpoint(tmp_path, data_dir):
    """Under SLURM with trainer.devices > 1, the job's process is the one elastic runs the workers from."""
    (tmp_path / "signal_parent.py").write_text(PARENT_SIGNAL)
    run_dir = tmp_path / "run"
    result = run_train("config=mnist_cnn", "trainer.devices=2", "trainer.log_every_n_steps=1",
                       "+callbacks.parent._target_=signal_parent.SignalParentAt", "+callbacks.parent.step=2",
                       f"hydra.run.dir={run_dir}", *SHORT, cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 128 + signal.SIGUSR2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SIGUSR2 received" in result.stdout + result.stderr  # the workers got it from their parent
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert 2 <= state["progress"]["global_step"] < 10
    assert not (run_dir / "metrics.json").exists()
