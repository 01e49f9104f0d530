"""The `find-batch-size` console script: the largest `dataset.batch_size` that fits, without training.

`find-batch-size config=mnist_cnn [any train override]` composes the same config as `train`
(plus the `batch_size_find` settings of configs/find_batch_size.yaml), builds the data, model and
optimizer as a run would, and tries batch sizes on the device (trainer/engine/batch_size_finder.py).
It prints each try (on a CPU with the process's peak memory), the batch size found and the
`train` command line that uses it. Nothing is written.
"""
from __future__ import annotations

import shlex

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from decltrain.trainer.commands import console_script, tool
from decltrain.trainer.errors import UserError


def run(cfg: DictConfig) -> int:
    with console_script.frozen_imports():  # as in `train`: collections then skip torch's import-time objects
        from torch.utils.data import default_collate

        from decltrain.trainer.commands import build
        from decltrain.trainer.engine import distributed
        from decltrain.trainer.engine.batch_size_finder import search, step_fits
        from decltrain.trainer.engine.device import seed_everything
        from decltrain.trainer.engine.precision import Precision

    settings = cfg.batch_size_find
    if not 0 <= settings.margin < 1 or settings.start < 1:
        raise UserError(f"batch_size_find.margin={settings.margin} must lie in [0, 1) and batch_size_find.start="
                        f"{settings.start} must be at least 1")
    seed_everything(cfg.seed)
    splits = build.data(cfg)
    device = distributed.device(str(getattr(cfg.trainer.accelerator, "value", cfg.trainer.accelerator)))
    model, task = build.model_and_task(cfg, splits)
    model = model.to(device)
    optimizer = build.optimizer(cfg, model)
    collate = splits.loader.collate_fn or default_collate
    train_set = splits.train
    largest = min(int(settings.largest), len(train_set))  # type: ignore[arg-type]  # DataSplits' sets are sized

    def batch(size: int) -> object:
        return collate([train_set[i] for i in range(size)])

    fits = step_fits(model, optimizer, task,
                     Precision(str(cfg.trainer.precision), device), batch, device, float(settings.margin))
    result = search(fits, int(settings.start), largest)
    where = "peak GPU memory" if device.type == "cuda" else "peak process memory (CPU)"
    for size, (fitted, used) in sorted(result.tried.items()):
        print(f"batch size {size:>6}: {'fits' if fitted else 'does not fit':>12}, {where} {used / 2**20:,.0f} MiB")
    if not result.batch_size:
        raise UserError(f"not even batch_size_find.start={settings.start} fits on {device}; lower it or use a "
                        "smaller model")
    note = " (the upper limit: batch_size_find.largest or the training set's size)" if result.batch_size == largest else ""
    print(f"largest batch size that fits: {result.batch_size}{note}")
    overrides = [arg for arg in HydraConfig.get().overrides.task
                 if not arg.startswith(("batch_size_find.", "dataset.batch_size=", "hydra."))]
    print("train with it:\n  " + shlex.join(["train", *overrides, f"dataset.batch_size={result.batch_size}"]))
    return result.batch_size


def main() -> None:
    """The console script."""
    tool.run_tool(run, "find-batch-size", "find_batch_size")
