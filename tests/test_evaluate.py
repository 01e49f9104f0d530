"""`evaluate` on a run trained in the test session, and reopening run folders (trainer/runs/run_folder.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.helpers.commands import run_command
from decltrain.trainer.commands import evaluate
from decltrain.trainer.commands.entry_points import split_overrides
from decltrain.trainer.errors import UserError
from decltrain.trainer.runs.run_folder import RunFolder


@pytest.mark.slow
def test_evaluate_reproduces_the_training_test_metrics(tiny_run, tmp_path, data_dir):
    result = run_command("evaluate", f"run={tiny_run}", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    trained = json.loads((tiny_run / "metrics.json").read_text())
    evaluated = json.loads((tiny_run / "eval_test.json").read_text())
    for key in ("test/acc", "test/loss", "test/f1", "test/precision", "test/recall"):
        assert evaluated[key] == trained["test"][key], key
    assert evaluated["checkpoint"].endswith("checkpoints/best.ckpt")
    assert f"{trained['test']['test/acc']:.4f}" in result.stdout
    assert list(tmp_path.iterdir()) == []  # no outputs/, no .hydra, no log file where it ran


@pytest.mark.slow
def test_evaluate_val_split_of_last_checkpoint_with_an_override(tiny_run, tmp_path, data_dir):
    # The run validated 2 batches of 256; 4 batches of 128 cover the same 512 unshuffled samples.
    result = run_command("evaluate", f"run={tiny_run}", "split=val", "ckpt=last", "dataset.eval_batch_size=128",
                         "trainer.limit_val_batches=4", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    evaluated = json.loads((tiny_run / "eval_val.json").read_text())
    # One epoch: the last validation ran on exactly the weights of last.ckpt.
    assert evaluated["checkpoint"].endswith("checkpoints/last.ckpt")
    assert evaluated["val/acc"] == json.loads((tiny_run / "metrics.json").read_text())["last"]["val/acc"]


def _copy_without_checkpoints(run: Path, target: Path) -> Path:
    shutil.copytree(run / ".hydra", target / ".hydra")
    return target


def _with_config_edit(run: Path, target: Path, edit) -> Path:
    shutil.copytree(run, target)
    path = target / ".hydra" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))
    return target


@pytest.mark.slow
@pytest.mark.parametrize("make, expected", [
    (lambda run, tmp: tmp / "no_such_run", "does not exist"),
    (lambda run, tmp: _copy_without_checkpoints(run, tmp / "fresh"), "has no checkpoint"),
    (lambda run, tmp: _with_config_edit(run, tmp / "bigger", lambda c: c["model"].update(hidden=64)),
     "does not fit the model MnistCNN"),
], ids=["missing-folder", "no-checkpoint", "other-model-size"])
def test_bad_run_folders_fail_with_one_line_naming_the_folder(tiny_run, tmp_path, data_dir, make, expected):
    folder = make(tiny_run, tmp_path)
    result = run_command("evaluate", f"run={folder}", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 2
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(folder) in errors[0] and expected in errors[0], result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_misspelt_override_fails_with_one_line(tiny_run, tmp_path, data_dir):
    result = run_command("evaluate", f"run={tiny_run}", "dataset.batch_sise=3", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 2
    assert "has no key `dataset.batch_sise`; check the spelling" in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_run_is_required(tmp_path, data_dir):
    result = run_command("evaluate", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 2
    assert "evaluate needs run=..." in result.stdout


def test_command_line_is_split_between_the_command_and_the_run_config():
    args = ["run=R", "ckpt=checkpoints/epoch=001-step=57.ckpt", "dataset.batch_size=256", "+model.extra=1", "~callbacks.lr_monitor",
            "hydra.verbose=true", "-sc", "install=bash", "--cfg", "job"]
    own, run = split_overrides(args, {"run", "ckpt", "split"})
    assert own == ["run=R", "ckpt='checkpoints/epoch=001-step=57.ckpt'", "hydra.verbose=true", "-sc", "install=bash", "--cfg", "job"]
    assert run == ["dataset.batch_size=256", "+model.extra=1", "~callbacks.lr_monitor"]


def _folder(tmp_path: Path) -> Path:
    (tmp_path / ".hydra").mkdir()
    config = {"seed": 1, "model": {"hidden": 8}, "dataset": {"root": "${oc.env:DATA_DIR,data}", "sizes": [1, 2]},
              "loss": {}, "trainer": {"init_from": "gone.ckpt", "devices": 2, "limit_test_batches": None}}
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_overrides_follow_hydra_syntax_on_the_saved_config(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", "/elsewhere")
    run = RunFolder.open(str(_folder(tmp_path)), ["model.hidden=16", "dataset.sizes=[3,4]", "+dataset.extra=x",
                                                  "~trainer.limit_test_batches"])
    assert run.config.model.hidden == 16
    assert list(run.config.dataset.sizes) == [3, 4]
    assert run.config.dataset.extra == "x"
    assert "limit_test_batches" not in run.config.trainer
    assert run.config.dataset.root == "/elsewhere"  # resolved here, not where it was trained
    assert run.config.trainer.init_from is None  # the checkpoint gives the weights
    assert run.config.trainer.devices == 1  # one process, whatever the run trained on


@pytest.mark.parametrize("overrides, expected", [
    (["+model.hidden=3"], "already exists"),
    (["~model.depth"], "has no key `model.depth`"),
    (["model.hidden=[1"], "cannot parse"),
    (["model=resnet"], "groups cannot be swapped"),
    (["model.hidden=1,2"], "sweeps are for `train -m`"),
])
def test_bad_overrides_are_user_errors(tmp_path, overrides, expected):
    with pytest.raises(UserError, match=expected):
        RunFolder.open(str(_folder(tmp_path)), overrides)


def test_a_config_without_model_section_is_incompatible(tmp_path):
    folder = _folder(tmp_path)
    config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
    del config["model"]
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(UserError, match=f"run folder {folder}: .hydra/config.yaml has no model: .*incompatible"):
        RunFolder.open(str(folder), [])


def test_checkpoint_choice(tmp_path):
    run = RunFolder.open(str(_folder(tmp_path)), [])
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    (tmp_path / "checkpoints" / "epoch=003-step=9.ckpt").write_bytes(b"")
    assert run.checkpoint("last") == tmp_path / "checkpoints" / "last.ckpt"
    assert run.checkpoint("epoch=003-step=9.ckpt") == tmp_path / "checkpoints" / "epoch=003-step=9.ckpt"
    with pytest.raises(UserError, match=r"has no checkpoints/best.ckpt \(it holds epoch=003-step=9.ckpt, last.ckpt\)"):
        run.checkpoint("best")
    with pytest.raises(UserError, match="checkpoint nothing.ckpt not found"):
        run.checkpoint("nothing.ckpt")


def test_unknown_split_is_refused_before_any_work():
    config = OmegaConf.create({"run": "anywhere", "ckpt": "best", "split": "train"})
    with pytest.raises(UserError, match="use split=test or split=val"):
        evaluate.main(config, [])
