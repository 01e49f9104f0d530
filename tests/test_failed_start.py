"""A run that fails on a user error before training leaves no run folder behind."""
from __future__ import annotations

import pytest

from tests.helpers.commands import run_train


@pytest.mark.slow
def test_an_added_key_that_fails_before_training_leaves_no_run_folder(tmp_path, data_dir):
    result = run_train("config=mnist_cnn", "+optimizer.lrr=0.1", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unexpected keyword argument 'lrr'" in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_chosen_folder_holding_other_files_is_kept(tmp_path, data_dir):
    (tmp_path / "notes.txt").write_text("mine\n")
    result = run_train("config=mnist_cnn", "+optimizer.lrr=0.1", "hydra.run.dir=.", cwd=tmp_path,
                       env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine\n"
    assert (tmp_path / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_a_value_of_the_wrong_type_is_one_line_naming_the_override(tmp_path):
    result = run_train("trainer.max_epochs=abc", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "", result.stdout
    assert result.stderr.splitlines() == ["train: Error merging override trainer.max_epochs=abc: Value 'abc' of type "
                                          "'str' could not be converted to Integer"]
    assert not (tmp_path / "run").exists()
