"""A misspelt key: one line naming it and the closest keys, exit 2, and no run folder left behind."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from decltrain.trainer.commands.unknown_keys import dotted_keys, unknown_key_message
from tests.helpers.commands import run_train


def test_the_closest_keys_of_the_same_section_are_suggested():
    cfg = OmegaConf.create({"optimizer": {"lr": 0.1, "betas": [0.9, 0.99]}, "trainer": {"max_epochs": 3}})
    assert dotted_keys(cfg) == ["optimizer", "optimizer.lr", "optimizer.betas", "trainer", "trainer.max_epochs"]
    assert unknown_key_message("optimizer.lrr", cfg).endswith("did you mean optimizer.lr?")
    assert unknown_key_message("optimzer", cfg).endswith("did you mean optimizer?")
    assert unknown_key_message("trainr.max_epochs", cfg).endswith("did you mean trainer.max_epochs?")
    assert "--cfg job" in unknown_key_message("zzz", cfg)


@pytest.mark.slow
@pytest.mark.parametrize(("override", "suggestion"), [("optimizer.lrr=0.1", "did you mean optimizer.lr?"),
                                                      ("optimzer=sgd", "did you mean optimizer?")])
def test_a_misspelt_key_is_one_line_and_exit_2_with_no_run_folder(tmp_path, data_dir, override, suggestion):
    result = run_train("config=mnist_cnn", override, cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and suggestion in lines[0], lines
    assert list(tmp_path.iterdir()) == []


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
def test_other_composition_errors_keep_their_own_message(tmp_path):
    result = run_train("trainer.max_epochs=abc", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 1 and "could not be converted to Integer" in result.stderr, result.stderr


@pytest.mark.slow
def test_shell_completion_stays_silent_after_a_misspelt_key(tmp_path):
    line = "train optimizer.lrr=1 trainer.max_"
    result = run_train("-sc", "query=bash", cwd=tmp_path, env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
    assert result.returncode == 0 and result.stderr == "", result.stderr
