"""`evaluate run=<run folder>`: one checkpoint of a finished run, scored on its test or val split.

The metrics come from the very path training used for `test/*` (a Trainer from the run's config,
built without an optimizer; its unshuffled evaluation loader; `Trainer.evaluate`), so on the
same checkpoint and split the numbers are the training run's own.
"""
from __future__ import annotations

import json

from omegaconf import DictConfig

from decltrain.trainer.commands import build
from decltrain.trainer.console import print_metrics
from decltrain.trainer.errors import UserError
from decltrain.trainer.runs import layout
from decltrain.trainer.runs.run_folder import RunFolder
from decltrain.trainer.engine.loop import Trainer

SPLITS = ("test", "val")


def main(cfg: DictConfig, overrides: list[str]) -> dict[str, float]:
    if cfg.split not in SPLITS:
        raise UserError(f"split={cfg.split} is not a split; use split=test or split=val")
    run = RunFolder.open(cfg.run, overrides)
    splits, model, task, ckpt = build.trained_model(run, cfg.ckpt)
    with run.named_in_errors():
        trainer = Trainer(build.trainer_settings(run.config), model, splits, task, run_dir=run.path)
        loader = trainer.test_loader if cfg.split == "test" else trainer.val_loader
        metrics = trainer.evaluate(loader, cfg.split)
    print_metrics(metrics, title=f"{cfg.split} metrics of {ckpt.name}")
    target = layout.evaluation(run.path, cfg.split)
    target.write_text(json.dumps({**metrics, "checkpoint": str(ckpt)}, indent=2) + "\n")
    print(f"wrote {target}")
    return metrics
