"""Run folders of their own: unique fresh folders, no fresh run over another's checkpoints, one process per
folder, resume and rerun from the folder alone, and writes that fail with one line."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from decltrain.trainer.engine import checkpoint
from decltrain.trainer.errors import UserError
from decltrain.trainer.runs import from_folder, fresh_folder, run_lock, status
from tests.helpers.commands import python_path, run_train
from tests.helpers.resume import assert_bit_identical


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    """Four processes claim the same timestamped folder at once (Hydra's `${now:}` of one second)."""
    fresh = str(tmp_path / "outputs" / "mnist_cnn" / "2026-12-04_10-00-00")
    claim = f"from decltrain.trainer.runs import fresh_folder; print(fresh_folder.claimed({fresh!r}))"
    processes = [subprocess.Popen([sys.executable, "-c", claim], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    folders = [process.communicate(timeout=60)[0].strip() for process in processes]
    assert sorted(folders) == [fresh, f"{fresh}_1", f"{fresh}_2", f"{fresh}_3"]


def test_a_fresh_run_into_a_folder_with_checkpoints_is_refused_naming_both_fixes(tmp_path):
    run = tmp_path / "runs" / "a"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(UserError, match=r"holds the checkpoints of another run .*resume=auto.*another hydra.run.dir"):
        fresh_folder.check_command_line(["config=mnist_cnn", f"hydra.run.dir={run}"])
    fresh_folder.check_command_line(["config=mnist_cnn", f"hydra.run.dir={run}", "resume=auto"])  # continues it


@pytest.mark.slow
def test_train_refuses_a_fresh_run_into_a_folder_with_checkpoints_before_writing(tmp_path):
    (tmp_path / "runs/a/checkpoints").mkdir(parents=True)
    (tmp_path / "runs/a/checkpoints/last.ckpt").write_bytes(b"earlier run")
    result = run_train("config=mnist_cnn", "hydra.run.dir=runs/a", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "resume=auto" in result.stderr and "another hydra.run.dir" in result.stderr
    assert sorted(path.name for path in (tmp_path / "runs/a").iterdir()) == ["checkpoints"]  # nothing written


def test_a_run_folder_under_a_regular_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match=r"afile is a file, not a folder"):
        fresh_folder.check_command_line([f"hydra.run.dir={tmp_path / 'afile' / 'run'}"])


def test_a_second_process_in_a_run_folder_is_refused_naming_host_and_pid(tmp_path):
    with run_lock.held(tmp_path):
        with pytest.raises(UserError, match=rf"in use by pid {os.getpid()} on host {socket.gethostname()}"):
            with run_lock.held(tmp_path):
                pass
    with run_lock.held(tmp_path):  # released when the first holder ended
        pass


def test_resume_and_rerun_take_the_overrides_of_the_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["config=mnist_mlp", "optimizer.lr=3e-3",
                                                                   "seed=1", "resume=elsewhere"]))
    assert from_folder.expanded([f"resume={run}"]) == ["config=mnist_mlp", "optimizer.lr=3e-3", "seed=1", f"resume={run}"]
    assert from_folder.expanded(["-m", f"rerun={run}", "seed=1,2,3"]) == [
        "-m", "config=mnist_mlp", "optimizer.lr=3e-3", f"rerun={run}", "seed=1,2,3"]
    assert from_folder.expanded(["config=mnist_cnn", "resume=latest"]) == ["config=mnist_cnn", "resume=latest"]


def test_a_running_record_whose_process_is_gone_is_crashed(tmp_path):
    status.started(tmp_path, "mnist_cnn", [], {"seed": 1})
    assert status.observed(status.read(tmp_path)) == "running"
    gone = subprocess.Popen(["true"])
    gone.wait()
    status.write(tmp_path, {**status.read(tmp_path), "pid": gone.pid})
    assert status.observed(status.read(tmp_path)) == "crashed"
    status.write(tmp_path, {**status.read(tmp_path), "host": "another-host"})
    assert status.observed(status.read(tmp_path)) == "running"  # cannot be checked from here


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 10 MiB file system: one checkpoint of mnist_mlp (6.4 MB) fits, a second beside it does not."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mount)],
                                                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here (the test needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_checkpoint_onto_a_full_disk_is_one_line_and_keeps_the_previous(small_tmpfs):
    path = small_tmpfs / "last.ckpt"
    checkpoint.save_atomic({"model": {"w": torch.zeros(1_000_000)}}, path)  # 4 MB
    with pytest.raises(UserError, match=rf"cannot write checkpoint {path}: no space left on device; free disk space"):
        checkpoint.save_atomic({"model": {"w": torch.ones(2_000_000)}}, path)  # 8 MB more does not fit
    assert torch.equal(checkpoint.load(path)["model"]["w"], torch.zeros(1_000_000))
    assert [entry.name for entry in small_tmpfs.iterdir()] == ["last.ckpt"]  # no partial file left


SHORT = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "logger=none"]


@pytest.mark.slow
def test_a_training_run_on_a_full_disk_ends_with_one_line_and_a_loadable_last_checkpoint(tmp_path, small_tmpfs,
                                                                                         data_dir):
    result = run_train("config=mnist_mlp", f"hydra.run.dir={small_tmpfs / 'run'}", "trainer.max_epochs=2", *SHORT,
                       cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "cannot write checkpoint" in errors[0] and "no space left on device" in errors[0]
    last = small_tmpfs / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint.load(last)["progress"]["global_step"] == 3  # the first epoch's
    assert status.read(small_tmpfs / "run")["status"] == "failed"


@pytest.mark.slow
def test_resume_from_the_folder_alone_is_bit_identical_and_rerun_names_its_source(tmp_path, data_dir):
    """A run made with overrides, stopped by SIGTERM at step 4 of 6; `train resume=<folder>` finishes it."""
    env = {"DATA_DIR": str(data_dir), "PYTHONPATH": python_path(Path(__file__).resolve().parents[1])}
    made = ["config=mnist_mlp", "optimizer.lr=3e-3", "trainer.max_epochs=2", *SHORT]
    whole = run_train(*made, "hydra.run.dir=whole", cwd=tmp_path, env=env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    stopper = ["+callbacks.stop._target_=tests.helpers.callbacks.SignalAtStep", "+callbacks.stop.step=4"]
    stopped = run_train(*made, *stopper, "hydra.run.dir=parts", cwd=tmp_path, env=env)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    resumed = run_train("resume=parts", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_bit_identical(checkpoint.load(tmp_path / "whole/checkpoints/last.ckpt")["model"],
                         checkpoint.load(tmp_path / "parts/checkpoints/last.ckpt")["model"])
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("whole", "parts")]
    assert metrics[0]["best"] == metrics[1]["best"] and metrics[0]["test"] == metrics[1]["test"]
    assert status.read(tmp_path / "parts")["status"] == "done"

    again = run_train("rerun=whole", "hydra.run.dir=again", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "again/reproducibility.json").read_text())[-1]["rerun_of"] == "whole"
    assert json.loads((tmp_path / "again/metrics.json").read_text())["test"] == metrics[0]["test"]


def test_a_run_of_the_user_s_own_configs_brings_its_config_folder(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["config=my_exp"]))
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"config_sources": [
        {"path": "decltrain.configs", "provider": "main"}, {"path": "/home/me/configs", "provider": "command-line"}]}}}))
    assert from_folder.expanded([f"resume={run}"]) == ["--config-dir", "/home/me/configs", "config=my_exp",
                                                        f"resume={run}"]
    assert from_folder.expanded(["--config-dir", "other", f"resume={run}"])[:3] == ["--config-dir", "other",
                                                                                     "config=my_exp"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a file every write to fails as on a full disk")
def test_a_log_file_that_cannot_be_written_stops_the_run_in_one_line_once():
    import logging

    from decltrain.trainer.runs.log_file import RunLogFile

    logger = logging.getLogger("decltrain.test_log_file")
    handler = RunLogFile("/dev/full")
    logger.addHandler(handler)
    try:
        with pytest.raises(UserError, match=r"^cannot write the log file /dev/full: No space left on device; "):
            logger.error("a line")
        logger.error("the error line itself, after the failure")  # the handler is silent now, not raising again
    finally:
        logger.removeHandler(handler)
        handler.close()
