"""One training run, start to finish: build, fit, test the best checkpoint, write metrics.json."""
from __future__ import annotations

import json
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from trainer import build
from trainer.console import print_config, print_metrics, print_model_summary
from trainer.device import seed_everything
from trainer.task import Task


def run(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    seed_everything(cfg.seed)
    splits = build.data(cfg)
    model = build.model(cfg, splits)
    callbacks = build.callbacks(cfg)
    print_config(cfg, list(callbacks))
    print_model_summary(model)
    task = Task(build.loss(cfg), splits.task, splits.num_classes)
    optimizer = build.optimizer(cfg, model)
    lr_schedule = build.lr_schedule(cfg, optimizer)
    fast_dev_run = cfg.trainer.fast_dev_run
    loggers = [] if fast_dev_run else build.loggers(cfg, run_dir)
    trainer = build.trainer(cfg, callbacks, loggers, run_dir)
    trainer.config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    trainer.setup(model, splits, optimizer, lr_schedule, task)
    try:
        trainer.fit()
        checkpointer = callbacks.get("model_checkpoint")
        best = getattr(checkpointer, "best_path", None)
        final = {**trainer.callback_metrics, **trainer.test(best)}
        if not fast_dev_run:
            (run_dir / "metrics.json").write_text(json.dumps(
                {**final, "epoch": trainer.epoch, "global_step": trainer.global_step}, indent=2) + "\n")
            hparams = _flatten(OmegaConf.to_container(cfg, resolve=True))
            for logger in loggers:
                logger.log_hyperparams(hparams, final)
        print_metrics(final)
    finally:
        for logger in loggers:
            logger.close()
    monitor = getattr(getattr(checkpointer, "monitor", None), "name", None)
    return final.get(monitor) if monitor else None


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{'optimizer': {'lr': 1e-3}} -> {'optimizer.lr': 1e-3}, for TensorBoard's HPARAMS tab."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
