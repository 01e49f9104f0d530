"""Typed schema of the primary config, so Hydra rejects a wrong type at composition time.

`train trainer.max_epochs=abc` fails with the key and the expected type before any work starts.
Groups whose content varies by option (model, dataset, ...) stay untyped (`Any`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


class Accelerator(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Strategy(str, Enum):
    """The strategies implemented (trainer/engine/settings.py checks them again for Trainers built in Python)."""
    auto = "auto"  # one process, or DDP when devices > 1 or under torchrun
    ddp = "ddp"    # DDP; refused in a single process


@dataclass
class TrainerSchema:
    _target_: str = "decltrain.trainer.engine.loop.Trainer"  # the class these settings configure (TrainerSettings holds them)
    accelerator: Accelerator = Accelerator.auto
    strategy: Strategy = Strategy.auto
    devices: int = 1  # processes on this machine (one per GPU); torchrun's --nproc_per_node wins
    sync_batchnorm: bool = False
    compile: Any = False  # true | false | a torch.compile mode (reduce-overhead, ...); checked in trainer/engine/settings.py
    precision: str = "32"  # 32 | 16-mixed | bf16-mixed; checked in trainer/engine/precision.py
    accumulate_grad_batches: int = 1
    max_epochs: int = 10
    max_steps: int = -1
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 50
    fast_dev_run: bool = False
    # int = number of batches, float = fraction of the epoch; checked in the Trainer.
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    deterministic: bool = False
    cudnn_benchmark: bool = False
    nonfinite_loss: str = "stop"  # stop | skip
    init_from: Optional[str] = None  # checkpoint to take weights from (fresh optimizer)
    init_strict: bool = True
    val_check_interval: Optional[int] = None  # validate every N optimizer steps (also mid-epoch)
    max_time: Any = None  # DD:HH:MM:SS or seconds
    overfit_batches: int = 0
    detect_anomaly: bool = False
    profiler: Optional[str] = None  # simple | pytorch
    profiler_schedule: dict[str, int] = field(default_factory=lambda: {"wait": 1, "warmup": 1, "active": 3})


@dataclass
class TrainSchema:
    seed: int = 42
    resume: Optional[str] = None  # checkpoint file, run folder, "latest", or "auto"
    print_config: str = "compact"  # compact | full: the whole config tree at the start too
    model: Any = None
    dataset: Any = None
    loss: Any = None
    optimizer: Any = None
    scheduler: Any = None
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    callbacks: Optional[dict[str, Any]] = None
    logger: Optional[dict[str, Any]] = None
    lr_find: Any = None  # find-lr's settings (configs/find_lr.yaml)


def register() -> None:
    """Makes `train_schema` available to the defaults list of configs/train.yaml."""
    ConfigStore.instance().store(name="train_schema", node=TrainSchema)
