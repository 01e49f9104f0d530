"""The installed `train` command, run in a subprocess as a user would."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.helpers.commands import run_train
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow  # every test runs the installed `train`


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, data_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """One real two-epoch MNIST run, shared by the checks below."""
    run_dir = tmp_path_factory.mktemp("mnist") / "run"
    result = run_train("config=mnist_cnn", "trainer.max_epochs=2", "optimizer.lr=0.002",
                       f"hydra.run.dir={run_dir}", cwd=REPO, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir, result


def test_run_folder_holds_everything(mnist_run):
    run_dir, _ = mnist_run
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert (run_dir / "train.log").read_text().count("val/acc") >= 2
    for name in ("last.ckpt", "best.ckpt"):
        torch.load(run_dir / "checkpoints" / name, weights_only=True)
    assert list(run_dir.glob("events.out.tfevents.*"))


def test_metrics_json_names_the_best_and_the_last_epoch(mnist_run):
    metrics = json.loads((mnist_run[0] / "metrics.json").read_text())
    assert metrics["monitor"] == "val/acc" and metrics["test"]["model"] == "best"
    assert {"val/acc", "val/loss"} <= set(metrics["best"]) and {"val/acc", "val/loss"} <= set(metrics["last"])
    assert {"test/acc", "test/loss", "test/f1"} <= set(metrics["test"])
    assert metrics["test"]["test/acc"] >= 0.93
    assert metrics["last"]["global_step"] == 2 * 57  # 3,600 training digits / 64 per batch, two epochs


def test_override_is_recorded_and_used(mnist_run):
    run_dir, _ = mnist_run
    assert "optimizer.lr=0.002" in yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"] == 0.002
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.002
    assert yaml.safe_load(state["config"])["optimizer"]["lr"] == 0.002


def test_tensorboard_has_the_scalars_and_hparams(mnist_run):
    events = EventAccumulator(str(mnist_run[0])).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/acc", "train/lr", "train/epoch", "test/acc"} <= tags
    assert all("/" in tag for tag in tags), tags  # every card in a named group: train/ and val/ lead
    assert {event.value for event in events.Scalars("train/epoch")} == {1.0, 2.0}  # counted from 1, as in the logs
    # Short runs draw curves: ~20+ loss points per epoch (57 steps: every 2nd), and val/ starts at step 0.
    assert len(events.Scalars("train/loss")) == 114 // 2
    assert [event.step for event in events.Scalars("val/acc")] == [0, 57, 114]
    plugins = EventAccumulator(str(mnist_run[0]), size_guidance={"tensors": 0}).Reload().PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins
    experiment = plugin_data_pb2.HParamsPluginData.FromString(plugins["_hparams_/experiment"]).experiment
    columns = [info.name for info in experiment.hparam_infos]
    assert "optimizer.lr" in columns and "dataset.download" not in columns and len(columns) <= 20, columns
    # HPARAMS shows a metric's latest point: the values of metrics.json.
    report = json.loads((mnist_run[0] / "metrics.json").read_text())
    final = {**report["last"], **report["test"]}
    shown = [info.name.tag for info in experiment.metric_infos]
    assert {"val/acc", "test/acc"} <= set(shown)
    for tag in shown:
        assert events.Scalars(tag)[-1].value == pytest.approx(final[tag], rel=1e-6), tag


def test_terminal_output_shows_config_model_and_metrics(mnist_run):
    out = mnist_run[1].stdout
    assert re.search(r"callbacks +progress_bar, model_checkpoint", out)
    assert "MnistCNN" in out and "1,199,882" in out
    assert "final metrics" in out and "test/acc" in out


def test_fast_dev_run_writes_nothing_that_looks_like_a_run(tmp_path, data_dir):
    run_dir = tmp_path / "dev"
    result = run_train("trainer.fast_dev_run=true", f"hydra.run.dir={run_dir}", cwd=tmp_path,
                       env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "metrics.json").exists()
    assert not list(run_dir.glob("events.out.tfevents.*"))


def test_help_lists_experiments_and_groups(tmp_path):
    result = run_train("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert ("config: cifar10_cnn, cifar10_resnet18, coco_detection, fashion_mnist_cnn, imagefolder_resnet18, "
            "mnist_autoencoder, mnist_cnn") in result.stdout
    assert "optimizer: adagrad, adam, adamw, rmsprop, sgd" in result.stdout


def test_cfg_job_prints_the_config_without_training(tmp_path):
    result = run_train("config=mnist_cnn", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout)["model"]["_target_"] == "decltrain.models.MnistCNN"
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["optimizer.lrr=1"], "lrr"),
    (["config=no_such_experiment"], "mnist_cnn"),
    (["trainer.max_epochs=abc"], "could not be converted to Integer"),
    (["model._target_=models.NoSuchModel"], "config `model` (models.NoSuchModel)"),
    (["+model.input_shape=[3,32,32]"], "does not fit dataset MNIST (input shape (1, 28, 28))"),
    (["task._target_=builtins.object"], "task builtins.object has no method loss(model, batch)"),
    (["task=regression"], "task=regression needs numeric targets but the dataset gives multiclass ones"),
])
def test_bad_input_fails_briefly_naming_the_problem(tmp_path, data_dir, args, expected):
    result = run_train(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert expected in output
    # Hydra lists the available experiments one per tab-indented line: that list grows with the
    # catalogue and is the fix, not part of the error.
    error_lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("\t")]
    assert len(error_lines) <= 15, result.stderr
    assert "Traceback" not in output


@pytest.mark.parametrize(("override", "expected"), [
    ("trainer.precision=64", "trainer.precision='64' is not valid; use one of 32, 16-mixed, bf16-mixed"),
    ("optimizer.lr=-1", "config `optimizer` (torch.optim.Adam): Invalid learning rate: -1"),
    ("trainer.devices=0", "trainer.devices=0 must be at least 1"),
])
def test_an_impossible_setting_is_one_line_before_anything_else(tmp_path, override, expected):
    """Checked before data is loaded (DATA_DIR holds none) and before the config or model is printed."""
    result = run_train("config=mnist_cnn", override, cwd=tmp_path, env={"DATA_DIR": str(tmp_path / "no_data")})
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].endswith(expected), lines


def test_missing_data_names_the_folder_and_both_fixes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_train("dataset.download=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                       env={"DATA_DIR": str(empty)})
    assert result.returncode == 2
    assert f"MNIST not found under {empty / 'MNIST'}" in result.stdout + result.stderr
    assert "set DATA_DIR" in result.stdout + result.stderr


def test_non_editable_install_finds_its_configs(tmp_path):
    """A plain `pip install .` ships the configs: `train --cfg job` works from any folder."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO)], check=True, capture_output=True, timeout=300)
    assert (target / "decltrain" / "configs" / "train.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import decltrain.trainer as package\n"
            f"assert package.__file__.startswith({str(target)!r}), package.__file__\n"
            "from decltrain.trainer.commands.train import train; train()")
    result = subprocess.run([sys.executable, "-c", code, "--cfg", "job"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "decltrain.models.MnistCNN" in result.stdout
