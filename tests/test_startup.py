"""A fast start: help and config printing never import torch; thread settings precede torch."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_train


def imported_modules(stderr: str) -> set[str]:
    """Module names from `-X importtime` output (`import time: self | cumulative | name`)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [["--help"], ["config=mnist_cnn", "--cfg", "job"]], ids=["help", "cfg_job"])
def test_help_and_cfg_job_do_not_import_torch(args: list[str]):
    result = run_train(*args, cwd=REPO, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "hydra" in modules  # the import log is really there
    assert not {name for name in modules if name == "torch" or name.startswith("torch.")}
    assert ("MnistCNN" if "--cfg" in args else "mnist_cnn") in result.stdout


def _omp_policy_after_importing_cli(env: dict[str, str]) -> list[str]:
    code = "import sys, os, decltrain.trainer.commands.train; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            check=True)
    return result.stdout.split()


def test_openmp_threads_sleep_by_default_and_the_user_can_choose():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _omp_policy_after_importing_cli(env) == ["PASSIVE", "False"]
    assert _omp_policy_after_importing_cli({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == ["ACTIVE", "False"]


def test_a_run_without_logging_never_imports_tensorboard(tmp_path, data_dir):
    result = run_train("config=mnist_cnn", "trainer.fast_dev_run=true", cwd=tmp_path,
                       env={"PYTHONPROFILEIMPORTTIME": "1", "DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "torch" in modules and "torch.utils.tensorboard" not in modules
