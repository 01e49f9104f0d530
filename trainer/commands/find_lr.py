"""The `find-lr` console script: the learning-rate range test on an experiment, without training it.

`find-lr config=mnist_cnn [any train override]` composes the same config as `train` (plus the
`lr_find` settings of configs/find_lr.yaml), builds the data, model and optimizer as a run
would, sweeps a copy of them (trainer/engine/lr_finder.py), and writes into its own folder
(outputs/<experiment>/find_lr_<time>/): lr_find.png, lr_find.json and TensorBoard events.
It prints the suggested rate and the `train` command line that uses it; the experiment's seed
and model are not changed, so that command trains from the same start as without find-lr.
"""
from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from decltrain.trainer.commands import console_script, tool
from decltrain.trainer.errors import UserError

log = logging.getLogger("decltrain")


def run(cfg: DictConfig) -> float:
    with console_script.frozen_imports():  # as in `train`: collections then skip torch's import-time objects
        from torch.utils.tensorboard import SummaryWriter

        from decltrain.trainer.commands import build
        from decltrain.trainer.engine import data, distributed
        from decltrain.trainer.engine.device import seed_everything
        from decltrain.trainer.engine.lr_finder import plot, range_test

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    settings = cfg.lr_find
    seed_everything(cfg.seed)
    splits = build.data(cfg)
    model, task = build.model_and_task(cfg, splits)
    device = distributed.device(str(getattr(cfg.trainer.accelerator, "value", cfg.trainer.accelerator)))
    optimizer = build.optimizer(cfg, model)
    loader = data.train_loader(splits.train, splits.loader, cfg.seed, device)
    result = range_test(model, optimizer, loader, task, device,
                        min_lr=settings.min_lr, max_lr=settings.max_lr, num_steps=settings.num_steps,
                        divergence=settings.divergence)
    image = plot(result, run_dir / "lr_find.png")
    writer = SummaryWriter(log_dir=str(run_dir))
    for step, (lr, loss) in enumerate(zip(result.lrs, result.losses)):
        writer.add_scalar("lr_find/loss", loss, step)
        writer.add_scalar("lr_find/lr", lr, step)
    writer.add_image("lr_find/curve", image, 0, dataformats="CHW")
    writer.close()
    (run_dir / "lr_find.json").write_text(json.dumps(
        {"suggestion": result.suggestion, "diverged": result.diverged, "lr": result.lrs, "loss": result.losses}) + "\n")
    overrides = [arg for arg in HydraConfig.get().overrides.task
                 if not arg.startswith(("lr_find.", "optimizer.lr=", "hydra."))]
    stop = "stopped when the loss diverged" if result.diverged else f"no divergence up to {settings.max_lr:g}"
    log.info("range test: %d steps from %.1e to %.1e (%s); plot: %s", len(result.lrs), result.lrs[0],
             result.lrs[-1], stop, run_dir / "lr_find.png")
    print(f"suggested learning rate: {result.suggestion:.3g}")
    print("train with it:\n  " + shlex.join(["train", *overrides, f"optimizer.lr={result.suggestion:.3g}"]))
    return result.suggestion


def main() -> None:
    """The console script."""
    tool.run_tool(run, "find-lr", "find_lr")
