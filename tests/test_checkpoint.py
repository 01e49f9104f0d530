"""Checkpoint files: atomic writes, safe loading, clear errors."""
from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.trainers import TinyNet, make_trainer
from decltrain.trainer.engine import checkpoint
from decltrain.trainer.errors import UserError


def test_checkpoint_loads_with_weights_only_and_holds_everything(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=3)
    trainer.config_yaml = "seed: 1\n"
    trainer.fit()
    path = tmp_path / "state.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)
    assert set(state) >= {"model", "optimizer", "lr_schedule", "precision", "progress", "callbacks", "rng", "config"}
    assert state["config"] == "seed: 1\n"
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    assert all(not key.startswith(("_orig_mod.", "module.")) for key in state["model"])


def test_save_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "a.ckpt"
    checkpoint.save_atomic({"model": {"w": torch.zeros(2)}}, path)
    checkpoint.save_atomic({"model": {"w": torch.ones(2)}}, path)
    assert torch.equal(checkpoint.load(path)["model"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["a.ckpt"]


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the checkpoint folder should be")
    path = blocker / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError, match=f"cannot write checkpoint {path}"):
        checkpoint.save_atomic({"model": {"w": torch.ones(2)}}, path)
    assert blocker.read_text().startswith("a file")


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    checkpoint.save_atomic({"model": {"w": torch.zeros(2)}}, path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(UserError, match="No space left on device"):
        checkpoint.save_atomic({"model": {"w": torch.ones(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)["model"]["w"], torch.zeros(2))
    assert os.listdir(tmp_path) == ["a.ckpt"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_names_the_file(tmp_path, damage):
    path = tmp_path / "bad.ckpt"
    checkpoint.save_atomic({"model": TinyNet().state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    with pytest.raises(UserError, match=f"checkpoint {path} is truncated or corrupt"):
        checkpoint.load(path)


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"model": {}, "payload": TinyNet()}, path)  # a pickled object, not plain tensors
    with pytest.raises(UserError, match="truncated or corrupt"):
        checkpoint.load(path)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.ckpt")


def test_mismatched_model_lists_keys_and_shapes():
    weights = TinyNet(num_classes=5).state_dict()
    weights["extra.weight"] = torch.zeros(1)
    del weights["net.0.bias"]
    with pytest.raises(UserError) as err:
        checkpoint.load_model_weights(TinyNet(num_classes=3), weights, "x.ckpt")
    message = str(err.value)
    assert "net.3.weight: checkpoint (5, 32) vs model (3, 32)" in message
    assert "missing keys: net.0.bias" in message
    assert "unexpected keys: extra.weight" in message
