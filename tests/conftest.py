"""Shared fixtures: the shared MNIST subset, synthetic data, a small Trainer, the `train` command."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from decltrain.datasets.base import DataSplits, LoaderSettings
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.placement import Placement
from decltrain.trainer.engine.scheduling import LRSchedule
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.engine.task import Task

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` need a CUDA device; where torch sees none they are skipped, saying why."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is false); "
                                   "on a GPU machine run them with: pytest -m cuda")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST subset: DATA_DIR when set (CI sets it), else ../shared/data."""
    path = Path(os.environ.get("DATA_DIR", SHARED_DATA)).resolve()
    if not (path / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.fail(f"the MNIST subset is missing under {path}; set DATA_DIR to ../shared/data")
    return path


@pytest.fixture(autouse=True, scope="session")
def private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Image-folder caches of every test (and of the commands it starts) go to a temporary folder."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))


def synthetic_splits(n: int = 256, features: int = 8, classes: int = 3, batch_size: int = 16,
                     seed: int = 0) -> DataSplits:
    """Linearly separable blobs: any working loop learns them in a few epochs."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=generator) * 3

    def split(count: int) -> TensorDataset:
        labels = torch.randint(0, classes, (count,), generator=generator)
        return TensorDataset(centers[labels] + torch.randn(count, features, generator=generator), labels)

    return DataSplits(train=split(n), val=split(n // 4), test=split(n // 4), num_classes=classes,
                      input_shape=(features,), loader=LoaderSettings(batch_size=batch_size), name="blobs")


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 3, input_shape: tuple[int, ...] = (8,), dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_shape[0], 32), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_trainer(tmp_path: Path, callbacks: dict | None = None, splits: DataSplits | None = None,
                 lr: float = 0.05, model: nn.Module | None = None,
                 optimizer: Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer] | None = None,
                 schedule: Callable[[torch.optim.Optimizer], LRSchedule] | None = None,
                 loggers: dict | None = None, placement: Placement | None = None, **trainer_kwargs) -> Trainer:
    """A Trainer on synthetic data, seeded, ready for `fit` (`fit(ckpt_path)` to resume).

    `model` (a TinyNet unless given) is trained by `optimizer(params)` (SGD with `lr` and momentum
    0.9 unless given), scheduled by `schedule(optimizer)` (none unless given)."""
    torch.manual_seed(0)
    splits = splits or synthetic_splits()
    model = TinyNet(splits.num_classes, splits.input_shape) if model is None else model
    optimizer_ = (optimizer or (lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9)))(model.parameters())
    trainer_kwargs.setdefault("max_epochs", 3)
    trainer_kwargs.setdefault("accelerator", "cpu")
    return Trainer(TrainerSettings(**trainer_kwargs), model, splits, Task(nn.CrossEntropyLoss(), "multiclass", 3),
                   optimizer=optimizer_, lr_schedule=schedule(optimizer_) if schedule else None, callbacks=callbacks or {}, loggers=loggers, run_dir=tmp_path,
                   placement=placement)


def train_command(name: str = "train") -> str:
    """An installed console script (`train` unless named), as a user would run it."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"the `{name}` console script is not installed; run the README's set-up command"
    return found


def run_train(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600,
              command: str | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([command or train_command(), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A short real MNIST run folder (10 training batches), for evaluate, predict and export-model."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    result = run_train("config=mnist_cnn", "trainer.max_epochs=1", "trainer.limit_train_batches=10",
                       "trainer.limit_val_batches=2", f"hydra.run.dir={run_dir}", cwd=REPO,
                       env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir


def run_command(name: str, *args: str, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    """One of the installed run-folder commands (`evaluate`, `predict`, `export-model`)."""
    return run_train(*args, cwd=cwd, env={"DATA_DIR": str(data_dir)}, command=train_command(name))
