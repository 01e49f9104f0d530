"""DDP on CPU with gloo: two real processes, compared against one process on the same samples."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from callbacks import ModelCheckpoint
from tests.conftest import TinyNet, synthetic_splits
from trainer import checkpoint, distributed
from trainer.loop import Trainer
from trainer.scheduling import LRSchedule
from trainer.task import Task


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fit(run_dir: Path, batch_size: int, accumulate: int = 1, epochs: int = 2, **kwargs) -> dict:
    """Trains a dropout-free TinyNet on blobs; returns weights, metrics and the last checkpoint."""
    torch.manual_seed(0)
    # 260 training samples: four full batches of 64 and a last one of 4 (2 per rank). 65
    # validation and test samples give two shards of unequal length.
    splits = synthetic_splits(n=260, batch_size=batch_size)
    model = TinyNet(splits.num_classes, splits.input_shape, dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = Trainer(accelerator="cpu", max_epochs=epochs, accumulate_grad_batches=accumulate,
                      callbacks={"model_checkpoint": ModelCheckpoint(monitor="val/acc")}, run_dir=run_dir, **kwargs)
    trainer.setup(model, splits, optimizer, LRSchedule(optimizer, None), Task(nn.CrossEntropyLoss(), "multiclass", 3))
    trainer.fit()
    return {"weights": {k: v.clone() for k, v in checkpoint.unwrap(trainer.model).state_dict().items()},
            "val": trainer.callback_metrics, "test": trainer.test(), "global_step": trainer.global_step}


def _worker(rank: int, world: int, port: int, run_dir: Path, kwargs: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    distributed.init("cpu", world)
    try:
        result = fit(run_dir, devices=world, **kwargs)
        torch.save(result, run_dir / f"result{rank}.pt")
    finally:
        distributed.destroy()


def fit_ddp(run_dir: Path, world: int = 2, **kwargs) -> list[dict]:
    run_dir.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(world, free_port(), run_dir, kwargs), nprocs=world, join=True)
    return [torch.load(run_dir / f"result{rank}.pt", weights_only=False) for rank in range(world)]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    return fit(tmp_path_factory.mktemp("one"), batch_size=64)


@pytest.fixture(scope="module")
def ddp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def two_processes(ddp_dir) -> list[dict]:
    return fit_ddp(ddp_dir, batch_size=32)


def test_two_ranks_of_32_match_one_process_of_64(one_process, two_processes):
    for rank_result in two_processes:
        assert rank_result["global_step"] == one_process["global_step"] == 2 * 5
        for name, value in one_process["weights"].items():
            torch.testing.assert_close(rank_result["weights"][name], value, rtol=1e-4, atol=1e-5)


def test_accumulation_under_ddp_matches_one_big_batch(tmp_path, one_process):
    """2 ranks x 2 micro-batches of 16 (gradients all-reduced once per group) == one batch of 64."""
    for rank_result in fit_ddp(tmp_path, batch_size=16, accumulate=2):
        for name, value in one_process["weights"].items():
            torch.testing.assert_close(rank_result["weights"][name], value, rtol=1e-4, atol=1e-5)


def test_evaluation_covers_the_whole_split_on_every_rank(one_process, two_processes):
    """65 validation samples, shards of 33 and 32: the reduced metrics are those of one process."""
    for rank_result in two_processes:
        for split in ("val", "test"):
            assert rank_result[split].keys() == one_process[split].keys()
            for name, value in one_process[split].items():
                assert rank_result[split][name] == pytest.approx(value, abs=1e-5), name


def test_checkpoints_hold_plain_names_and_every_ranks_rng(ddp_dir, two_processes):
    state = torch.load(ddp_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(key.startswith(("module.", "_orig_mod.")) for key in state["model"])
    assert len(state["rng_per_rank"]) == 2
    torch.testing.assert_close(state["model"]["net.0.weight"], two_processes[0]["weights"]["net.0.weight"])
