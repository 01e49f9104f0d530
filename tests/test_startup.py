"""A fast start: help and config printing never import torch; thread settings precede torch."""
from __future__ import annotations

import gc
import importlib.metadata
import os
import subprocess
import sys

import pytest

from tests.helpers.commands import run_train
from tests.helpers.paths import REPO


def imported_modules(stderr: str) -> set[str]:
    """Module names from `-X importtime` output (`import time: self | cumulative | name`)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--help"], ["config=mnist_cnn", "--cfg", "job"]], ids=["help", "cfg_job"])
def test_help_and_cfg_job_do_not_import_torch(args: list[str]):
    result = run_train(*args, cwd=REPO, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "hydra" in modules  # the import log is really there
    assert not {name for name in modules if name == "torch" or name.startswith("torch.")}
    assert ("MnistCNN" if "--cfg" in args else "mnist_cnn") in result.stdout


def _omp_policy(env: dict[str, str], code: str) -> list[str]:
    code += "; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", "import os, sys; " + code], cwd=REPO, env=env, capture_output=True,
                            text=True, check=True)
    return result.stdout.split()[-2:]


def test_openmp_threads_sleep_by_default_and_the_user_can_choose():
    """`train` sets the policy when it starts, before torch loads; importing its module changes nothing."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    start = ("sys.argv = ['train', 'config=mnist_cnn', '--cfg', 'job']; from decltrain.trainer.commands.train import "
             "train; train()")
    assert _omp_policy(env, start) == ["PASSIVE", "False"]
    assert _omp_policy({**env, "OMP_WAIT_POLICY": "ACTIVE"}, start) == ["ACTIVE", "False"]
    assert _omp_policy(env, "import decltrain.trainer.commands.train") == ["None", "False"]


@pytest.mark.slow
def test_a_run_without_logging_never_imports_tensorboard(tmp_path, data_dir):
    result = run_train("config=mnist_cnn", "trainer.fast_dev_run=true", cwd=tmp_path,
                       env={"PYTHONPROFILEIMPORTTIME": "1", "DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "torch" in modules and "torch.utils.tensorboard" not in modules


@pytest.mark.slow
@pytest.mark.parametrize(("args", "error"), [
    (["trainer.max_epochs=1,2"], "Ambiguous value for argument 'trainer.max_epochs=1,2'"),
    (["config=???"], "You must specify 'config'"),
], ids=["sweep_without_m", "missing_experiment"])
def test_train_refuses_what_hydra_refuses(tmp_path, args, error):
    result = run_train(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert error in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_the_first_torch_import_runs_without_the_collector_and_is_frozen_once(monkeypatch):
    from decltrain.trainer.commands import console_script

    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh `train` process
    try:
        with console_script.frozen_imports():
            assert not gc.isenabled()
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the test session's objects stay collectable
    monkeypatch.undo()
    with console_script.frozen_imports():  # torch imported: a later job of an in-process sweep freezes nothing
        assert gc.isenabled()
    assert gc.get_freeze_count() == 0


@pytest.mark.slow
@pytest.mark.parametrize("command, args", [("train", ["trainer.fast_dev_run=true"]),
                                           ("find-lr", ["lr_find.num_steps=5"])])
def test_a_console_script_imports_torch_without_collecting_and_freezes_it(tmp_path, data_dir, command, args):
    """The installed entry point, run as its script runs it, ends with torch's objects frozen."""
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name=command)
    module, _, function = entry.value.partition(":")
    code = ("import atexit, gc, sys; atexit.register(lambda: print('frozen objects:', gc.get_freeze_count())); "
            f"from {module} import {function} as main; sys.argv[0] = {command!r}; main()")
    result = subprocess.run([sys.executable, "-c", code, "config=mnist_cnn", *args], cwd=tmp_path,
                            env={**os.environ, "DATA_DIR": str(data_dir)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    frozen = int(result.stdout.rsplit("frozen objects:", 1)[1])
    assert frozen > 100_000  # torch, torchvision and the rest: about half a million objects
