"""A misspelt key or config name: one line naming it and the closest that exist, exit 2, no run folder."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from decltrain.trainer.commands.unknown_keys import dotted_keys, unknown_key_message, unknown_option_message
from tests.helpers.commands import run_train


def test_the_closest_keys_as_deep_as_the_misspelt_one_are_suggested():
    cfg = OmegaConf.create({"optimizer": {"lr": 0.1, "betas": [0.9, 0.99]},
                            "trainer": {"max_epochs": 3, "max_steps": -1}})
    assert dotted_keys(cfg) == ["optimizer", "optimizer.lr", "optimizer.betas", "trainer", "trainer.max_epochs",
                                "trainer.max_steps"]
    assert unknown_key_message("optimizer.lrr", cfg) == "no key optimizer.lrr in the config; did you mean optimizer.lr?"
    assert unknown_key_message("optimzer", cfg).endswith("did you mean optimizer?")
    assert unknown_key_message("trainr.max_epochs", cfg).endswith("did you mean trainer.max_epochs?")
    assert "train --cfg job" in unknown_key_message("zzz", cfg)
    # another composition error hid the config: the key is still named, without suggestions
    assert unknown_key_message("optimizer.lrr", None).startswith("no key optimizer.lrr in the config; see the keys")


def test_a_misspelt_config_name_lists_the_choices():
    message = unknown_option_message("optimizer/sgdd", ["adam", "sgd"])
    assert message == "optimizer=sgdd: no such config; did you mean sgd? (the choices: adam, sgd)"


@pytest.mark.slow
@pytest.mark.parametrize(("args", "expected"), [
    (["optimizer.lrr=0.1"], "train: no key optimizer.lrr in the config; did you mean optimizer.lr?"),
    (["optimzer=sgd"], "train: no key optimzer in the config; did you mean optimizer?"),
    (["optimizer.lrr=0.1", "trainr.max_epochs=2"], "train: no key optimizer.lrr in the config; did you mean "
     "optimizer.lr?; no key trainr.max_epochs in the config; did you mean trainer.max_epochs?"),
    (["config=mnist_cn"], "did you mean mnist_cnn?"),
    (["-m", "optimizer.lrr=0.1,0.2"], "did you mean optimizer.lr?"),
])
def test_a_misspelt_name_is_one_line_and_exit_2_with_no_run_folder(tmp_path, data_dir, args, expected):
    result = run_train(*args, cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_shell_completion_stays_silent_after_a_misspelt_key(tmp_path):
    line = "train optimizer.lrr=1 trainer.max_"
    result = run_train("-sc", "query=bash", cwd=tmp_path, env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
    assert result.returncode == 0 and result.stderr == "", result.stderr
