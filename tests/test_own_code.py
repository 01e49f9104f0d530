"""docs/own-code.md's worked example (own model, dataset, callback), run from a folder outside the repository."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import readme
from tests.helpers.commands import run_command, run_train
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow  # both tests run the installed `train`


def test_the_worked_example_runs_from_its_own_folder(tmp_path, data_dir):
    project = tmp_path / "my_project"
    project.mkdir()
    assert readme.write_example_files(project) == ["configs/config/autoencoder.yaml", "configs/config/my_exp.yaml",
                                                   "my_autoencoders.py", "my_callbacks.py", "my_data.py",
                                                   "my_models.py", "my_tasks.py"]
    assert REPO not in project.parents

    listing = run_train("--config-dir", "configs", "--help", cwd=project)
    assert listing.returncode == 0 and "my_exp" in listing.stdout

    result = run_train("--config-dir", "configs", "config=my_exp", "trainer.max_epochs=3", cwd=project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "my callback: epoch 3, val/acc" in result.stdout  # the user's callback ran
    assert "Net" in result.stdout and "print_accuracy" in result.stdout  # the model table, the callbacks
    (run_dir,) = (project / "outputs" / "my_exp").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert metrics["test/acc"] > 0.8  # the user's model learned the user's data (XOR)

    # The run-folder commands rebuild the user's model from the run's config, from the same folder.
    evaluated = run_command("evaluate", f"run={run_dir.relative_to(project)}", cwd=project, data_dir=data_dir)
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    assert json.loads((run_dir / "eval_test.json").read_text())["test/acc"] == metrics["test/acc"]


def test_a_missing_user_module_is_named_in_one_line(tmp_path):
    result = run_train("+callbacks.mine._target_=my_module.MyCallback", "trainer.fast_dev_run=true",
                       "dataset.fake=true", cwd=tmp_path)
    assert result.returncode == 2
    assert "my_module.MyCallback" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not Path(tmp_path / "my_module.py").exists()
