"""One training run, start to finish: build, fit, test the best checkpoint, write metrics.json."""
from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from decltrain.trainer import build, checkpoint, distributed, hparams, provenance, resume
from decltrain.trainer.console import print_config, print_metrics
from decltrain.trainer.device import seed_everything
from decltrain.trainer.errors import Preempted
from decltrain.trainer.task import Task

log = logging.getLogger("trainer")


def run(cfg: DictConfig) -> float | None:
    # Under torchrun each rank composed its own folder name; rank 0's is the run's.
    run_dir = distributed.broadcast_object(Path(HydraConfig.get().runtime.output_dir))
    talks = distributed.is_global_zero()  # only rank 0 prints and writes files
    resume_from = resume.checkpoint_path(cfg.resume, run_dir) if cfg.resume else None
    state = checkpoint.load(resume_from) if resume_from else None
    if talks:
        provenance.write(run_dir)
    seed_everything(cfg.seed)
    splits = build.data(cfg)
    model = build.model(cfg, splits)
    callbacks = build.callbacks(cfg)
    if talks:
        print_config(cfg, list(callbacks))
    task = Task(build.loss(cfg), splits.task, splits.num_classes)
    optimizer = build.optimizer(cfg, model)
    lr_schedule = build.lr_schedule(cfg, optimizer)
    fast_dev_run = cfg.trainer.fast_dev_run
    # A resumed run drops the TensorBoard points the interrupted one wrote after its checkpoint.
    purge_step = state["progress"]["global_step"] + 1 if state else None
    loggers = build.loggers(cfg, run_dir, purge_step, state.get("loggers") if state else None) \
        if talks and not fast_dev_run else []
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_config(config)
    trainer = build.trainer(cfg, callbacks, loggers, run_dir)
    trainer.config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    trainer.setup(model, splits, optimizer, lr_schedule, task)
    if state:
        trainer.load_state_dict(state, str(resume_from))
        log.info("resumed from %s: epoch %d, batch %d, step %d", resume_from, trainer.epoch + 1,
                 trainer.batch_idx, trainer.global_step)
    status = "failed"  # what the loggers report if the run does not get to the end
    try:
        try:
            trainer.fit()
        except Preempted as stop:
            status = "killed"
            last = run_dir / resume.LAST
            if not talks:
                raise
            if last.is_file():
                log.warning("%s at epoch %d, step %d; checkpoint %s. Resume with: %s", stop, trainer.epoch + 1,
                            trainer.global_step, last, _resume_command(last))
            else:
                log.warning("%s at epoch %d, step %d; no checkpoint was written (callbacks.model_checkpoint "
                            "is off)", stop, trainer.epoch + 1, trainer.global_step)
            raise
        checkpointer = callbacks.get("model_checkpoint")
        best = getattr(checkpointer, "best_path", None)
        final = {**trainer.callback_metrics, **trainer.test(best)}
        if talks and not fast_dev_run:
            (run_dir / "metrics.json").write_text(json.dumps(
                {**final, "epoch": trainer.epoch, "global_step": trainer.global_step}, indent=2) + "\n")
            hyperparameters = hparams.select(config, list(HydraConfig.get().overrides.task),
                                             dict(HydraConfig.get().runtime.choices))
            for logger in loggers:
                logger.log_hyperparams(hyperparameters, final)
        if talks:
            print_metrics(final)
        status = "success"
    finally:
        for logger in loggers:
            logger.close(status)
    monitor = getattr(getattr(checkpointer, "monitor", None), "name", None)
    return final.get(monitor) if monitor else None


def _resume_command(last: Path) -> str:
    """The user's own overrides, with `resume=` pointing at the checkpoint just written."""
    overrides = [arg for arg in HydraConfig.get().overrides.task if not arg.startswith("resume=")]
    return shlex.join(["train", *overrides, f"resume={last}"])

