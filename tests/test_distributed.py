"""DDP on CPU with gloo: two real processes, compared against one process on the same samples."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from torch import nn

from decltrain.callbacks import ModelCheckpoint
from decltrain.trainer.engine.callback import Callback
from tests.helpers.commands import run_train, train_command
from tests.helpers.data import synthetic_splits
from tests.helpers.distributed import on_ranks
from tests.helpers.paths import REPO
from tests.helpers.trainers import TinyNet, make_trainer
from decltrain.trainer.commands import launch, schema
from decltrain.trainer.engine import checkpoint
from decltrain.trainer.errors import UserError
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.tasks.classification import Classification


def fit(run_dir: Path, batch_size: int, accumulate: int = 1, epochs: int = 2, **kwargs) -> dict:
    """Trains a dropout-free net on blobs; returns its weights and metrics."""
    torch.manual_seed(0)
    # 260 training samples: four full batches of 64 and a last one of 4 (2 per rank). 65
    # validation and test samples give two shards of unequal length.
    splits = synthetic_splits(n=260, batch_size=batch_size)
    model = TinyNet(splits.num_classes, splits.input_shape, dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = Trainer(TrainerSettings(accelerator="cpu", max_epochs=epochs, accumulate_grad_batches=accumulate, **kwargs),
                      model, splits, Classification(nn.CrossEntropyLoss(), "multiclass", 3), optimizer=optimizer,
                      callbacks={"model_checkpoint": ModelCheckpoint(monitor="val/acc")}, run_dir=run_dir)
    trainer.fit()
    return {"weights": {k: v.clone() for k, v in checkpoint.unwrap(trainer.model).state_dict().items()},
            "val": trainer.callback_metrics, "test": trainer.test(), "global_step": trainer.global_step}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    return fit(tmp_path_factory.mktemp("one"), batch_size=64)


@pytest.fixture(scope="module")
def ddp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def two_processes(ddp_dir) -> list[dict]:
    return on_ranks(fit, ddp_dir, batch_size=32)


@pytest.mark.slow
def test_two_ranks_of_32_match_one_process_of_64(one_process, two_processes):
    for rank_result in two_processes:
        assert rank_result["global_step"] == one_process["global_step"] == 2 * 5
        for name, value in one_process["weights"].items():
            torch.testing.assert_close(rank_result["weights"][name], value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_accumulation_under_ddp_matches_one_big_batch(tmp_path, one_process):
    """2 ranks x 2 micro-batches of 16 (gradients all-reduced once per group) == one batch of 64."""
    for rank_result in on_ranks(fit, tmp_path, batch_size=16, accumulate=2):
        for name, value in one_process["weights"].items():
            torch.testing.assert_close(rank_result["weights"][name], value, rtol=1e-4, atol=1e-5)


def test_sync_batchnorm_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="trainer.sync_batchnorm=true needs CUDA"):
        make_trainer(tmp_path, sync_batchnorm=True)


@pytest.mark.slow
def test_evaluation_covers_the_whole_split_on_every_rank(one_process, two_processes):
    """65 validation samples, shards of 33 and 32: the reduced metrics are those of one process."""
    for rank_result in two_processes:
        for split in ("val", "test"):
            assert rank_result[split].keys() == one_process[split].keys()
            for name, value in one_process[split].items():
                assert rank_result[split][name] == pytest.approx(value, abs=1e-5), name


@pytest.mark.slow
def test_checkpoints_hold_plain_names_and_every_ranks_rng(ddp_dir, two_processes):
    state = torch.load(ddp_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(key.startswith(("module.", "_orig_mod.")) for key in state["model"])
    assert len(state["rng_per_rank"]) == 2
    torch.testing.assert_close(state["model"]["net.0.weight"], two_processes[0]["weights"]["net.0.weight"])


# ----------------------------------------------------------------- the `train` command, end to end
TINY = ("config=mnist_cnn", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2")


class RaiseOnRankOne(Callback):
    """Fails rank 1 after its second optimizer step, while rank 0 carries on into the next one."""

    def on_train_batch_end(self, trainer) -> None:
        if trainer.global_step == 2 and not trainer.is_global_zero:
            raise RuntimeError("boom on rank 1")


def only_run_folder(root: Path) -> Path:
    """The single run folder under `root`; fails if there are several, or stray empty ones."""
    folders = [path.parent for path in root.rglob(".hydra")]
    assert len(folders) == 1, folders
    assert [path for path in root.rglob("*") if path.is_dir() and not any(path.iterdir())] == []
    return folders[0]


def assert_complete_run(run_dir: Path) -> None:
    assert json.loads((run_dir / "metrics.json").read_text())["last"]["global_step"] == 4
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # rank 0's only
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(state["rng_per_rank"]) == 2


@pytest.mark.slow
def test_train_with_two_devices_writes_one_run_folder(tmp_path, data_dir):
    result = run_train(*TINY, "trainer.devices=2", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("final metrics") == 1  # rank 0 speaks for the job
    run_dir = only_run_folder(tmp_path / "outputs")
    assert_complete_run(run_dir)
    # The DDP checkpoint continues in one process, in the same folder.
    result = run_train(*TINY, "trainer.max_epochs=2", f"resume={run_dir}", cwd=tmp_path,
                       env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["last"]["global_step"] == 8


def test_a_launched_job_returns_its_best_monitored_value_to_the_sweeper(tmp_path):
    assert launch._monitored_value(tmp_path) is None  # no metrics.json: the job wrote none (fast_dev_run)
    (tmp_path / "metrics.json").write_text(json.dumps({"monitor": "val/acc", "best": {"val/acc": 0.75}}))
    assert launch._monitored_value(tmp_path) == 0.75


@pytest.mark.slow
def test_torchrun_runs_the_same_command_in_one_run_folder(tmp_path, data_dir):
    torchrun = Path(train_command()).with_name("torchrun")
    # Microseconds in the folder name: the ranks would each compose a different one.
    result = run_train("--standalone", "--nproc_per_node=2", "--no-python", train_command(), *TINY,
                       "hydra.run.dir=outputs/${now:%H-%M-%S-%f}", cwd=tmp_path, command=str(torchrun),
                       env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert_complete_run(only_run_folder(tmp_path / "outputs"))


@pytest.mark.slow
def test_a_failing_rank_ends_every_rank_with_its_error(tmp_path, data_dir):
    started = time.monotonic()
    result = run_train(*TINY, "trainer.max_epochs=3", "trainer.devices=2",
                       "+callbacks.boom._target_=tests.test_distributed.RaiseOnRankOne", f"hydra.run.dir={tmp_path / 'run'}",
                       cwd=REPO, env={"DATA_DIR": str(data_dir)})
    assert result.returncode != 0
    assert "boom on rank 1" in result.stdout + result.stderr
    assert time.monotonic() - started < 90  # ended, not hung until the process-group timeout
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_slurm_launcher_config_composes_with_one_gpu_per_device():
    schema.register()
    with initialize_config_module(version_base="1.3", config_module="configs"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm", "trainer.devices=4",
                                                      "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.decltrain.submitit_launcher.SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.nodes, launcher.tasks_per_node, launcher.partition) == (4, 1, 1, "gpu")
