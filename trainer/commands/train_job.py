"""One training run, start to finish: build, fit, test the best checkpoint, write metrics.json."""
from __future__ import annotations

import contextlib
import json
import logging
import shlex
import signal
from pathlib import Path
from typing import Any, cast

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from decltrain.callbacks.model_checkpoint import ModelCheckpoint
from decltrain.callbacks.optuna_pruning import OptunaPruning
from decltrain.trainer.commands import build, inference_record, start_summary
from decltrain.trainer.console import print_config, print_metrics, print_next_steps, print_start
from decltrain.trainer.engine import checkpoint, distributed
from decltrain.trainer.engine.callback import Callback
from decltrain.trainer.engine.device import seed_everything
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.placement import Placement
from decltrain.trainer.errors import Preempted
from decltrain.trainer.runs import config_drift, failed_start, layout, resume, run_lock, status, sweep_summary
from decltrain.trainer.tracking import hparams, provenance

log = logging.getLogger("decltrain")


def run(cfg: DictConfig) -> float | None:
    """Build, fit, test the best checkpoint, report; the value a sweeper optimises is returned."""
    # Under torchrun each rank composed its own folder name; rank 0's is the run's.
    run_dir = distributed.broadcast_object(Path(HydraConfig.get().runtime.output_dir))
    talks = distributed.is_global_zero()  # only rank 0 prints and writes files
    with run_lock.held(run_dir) if talks else contextlib.nullcontext():
        return _recorded_run(cfg, run_dir, talks)


def _recorded_run(cfg: DictConfig, run_dir: Path, talks: bool) -> float | None:
    """`run` in the run folder this process holds: its status record says how far it got and how it ended."""
    hydra = HydraConfig.get()
    if talks:
        composed = cast(dict[str, Any], OmegaConf.to_container(cfg, enum_to_str=True))
        status.started(run_dir, str(hydra.runtime.choices.get("config")), list(hydra.overrides.task),
                       hparams.flatten(composed))
    try:
        # A sweep job's folder stays: the sweep's summary names it, and its train.log holds the error.
        with failed_start.removed_on_error(run_dir, owner=talks and hydra.mode == RunMode.RUN):
            trainer, ckpt_path, config = _prepare(cfg, run_dir, talks)
    except BaseException as err:
        if talks and run_dir.is_dir():
            status.ended(run_dir, status.FAILED, error=sweep_summary.one_line(err))
        raise
    settings, callbacks, loggers = trainer.settings, trainer.callbacks, trainer.loggers

    status_name = "failed"  # what the loggers report if the run does not get to the end
    outcome: dict[str, Any] = {"status": status.FAILED}
    try:
        _fit(trainer, ckpt_path)
        checkpointer = _checkpointer(callbacks)
        test = trainer.test(checkpointer.best_path if checkpointer else None)
        report = _report(trainer, checkpointer, test)
        if talks and not settings.fast_dev_run:
            (run_dir / layout.METRICS).write_text(json.dumps(report, indent=2) + "\n")
            hyperparameters = hparams.select(config, list(HydraConfig.get().overrides.task),
                                             dict(HydraConfig.get().runtime.choices))
            for logger in loggers.values():
                logger.log_hyperparams(hyperparameters, {**trainer.callback_metrics, **test})
        if talks:
            print_metrics(_table(report))
            print_next_steps(run_dir)
        status_name = "success"
        outcome = {"status": status.PRUNED if _pruned(callbacks) else status.DONE}
    except Preempted as stop:
        status_name = "killed"
        outcome = {"status": status.STOPPED, "signal": signal.Signals(stop.signum).name}
        raise
    except BaseException as err:
        outcome["error"] = sweep_summary.one_line(err)
        raise
    finally:
        for logger in loggers.values():
            logger.close(status_name)
        if talks:
            status.ended(run_dir, outcome.pop("status"), **outcome, **_progress(trainer, _checkpointer(callbacks)))
    return layout.result(report)


def _prepare(cfg: DictConfig, run_dir: Path, talks: bool) -> tuple[Trainer, Path | None, dict[str, Any]]:
    """Everything before training: checks, data, model, callbacks, loggers; the Trainer, the checkpoint
    it resumes from (None for a fresh start) and the resolved config."""
    # Every setting is checked before anything is loaded, built or printed.
    settings = build.trainer_settings(cfg)
    placement = Placement(settings)  # what this machine or the process group cannot run
    build.check_optimization(cfg)
    full_config = start_summary.check_print_config(cfg)
    ckpt_path = resume.checkpoint(cfg.resume, run_dir)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    if ckpt_path:
        config_drift.check(checkpoint.saved_config(ckpt_path), config_yaml, str(ckpt_path))
    if talks:
        provenance.write(run_dir, rerun_of=cfg.get("rerun"))

    seed_everything(cfg.seed)
    splits = build.data(cfg)
    if talks:
        inference_record.write(splits, run_dir)
    model, task = build.model_and_task(cfg, splits, placement.build_device)
    optimizers = build.optimizers(cfg, model, task)
    lr_schedules = build.lr_schedules(cfg, optimizers)
    callbacks = build.callbacks(cfg)
    if talks:
        if full_config:
            print_config(cfg)
        hydra = HydraConfig.get()
        print_start(start_summary.start_summary(cfg, run_dir, dict(hydra.runtime.choices), list(hydra.overrides.task),
                                                model, list(callbacks)))
    loggers = build.loggers(cfg, run_dir) if talks and not settings.fast_dev_run else {}
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    for logger in loggers.values():
        logger.log_config(config)
    trainer = Trainer(settings, model, splits, task, optimizer=optimizers, lr_schedule=lr_schedules,
                      callbacks=callbacks, loggers=loggers, run_dir=run_dir, config_yaml=config_yaml,
                      placement=placement)
    return trainer, ckpt_path, config


def _fit(trainer: Trainer, ckpt_path: Path | None) -> None:
    """`trainer.fit`; a stop signal ends it with the command that continues the run (rank 0 says it)."""
    try:
        trainer.fit(ckpt_path)
    except Preempted as stop:
        last = layout.last(trainer.run_dir)
        if not trainer.is_global_zero:
            raise
        if last.is_file():
            log.warning("%s at epoch %d, step %d; checkpoint %s. Resume with: %s", stop, trainer.epoch + 1,
                        trainer.global_step, last, _resume_command(trainer.run_dir))
        else:
            log.warning("%s at epoch %d, step %d; no checkpoint was written (callbacks.model_checkpoint "
                        "is off)", stop, trainer.epoch + 1, trainer.global_step)
        raise


def _checkpointer(callbacks: dict[str, Callback]) -> ModelCheckpoint | None:
    """The checkpoint callback, by its type (whatever its config name): the best checkpoint it kept
    is the one tested, and its bookkeeping is the report's `best`. With several, the first."""
    return next((callback for callback in callbacks.values() if isinstance(callback, ModelCheckpoint)), None)


def _pruned(callbacks: dict[str, Callback]) -> bool:
    """True when an Optuna pruning callback stopped this run."""
    return any(isinstance(callback, OptunaPruning) and callback.pruned_at is not None
               for callback in callbacks.values())


def _progress(trainer: Trainer, checkpointer: ModelCheckpoint | None) -> dict[str, Any]:
    """What the status record keeps of where a run ended: epoch, step, the monitored best and the kept checkpoints."""
    monitor = checkpointer.monitor if checkpointer else None
    progress: dict[str, Any] = {"epoch": trainer.epoch, "step": trainer.global_step}
    if checkpointer and monitor:
        progress.update(monitor=monitor.name, mode=monitor.mode,
                        best=checkpointer.best[monitor.name] if checkpointer.best else None,
                        checkpoints={name: score for score, name in checkpointer.top_k})
    return progress


def _report(trainer: Trainer, checkpointer: ModelCheckpoint | None, test: dict[str, float]) -> dict[str, Any]:
    """metrics.json: the best checkpoint's values, the last epoch's, and the test of the model tested.

    `best` is what the monitored best checkpoint scored (and the value returned to sweepers);
    `last` is where training ended, with the latest validation and the run's summary values;
    `test` holds which of the two models was tested (best.ckpt when there is one).
    """
    monitor = checkpointer.monitor if checkpointer else None
    return {
        "monitor": monitor.name if monitor else None,
        "best": checkpointer.best if checkpointer else None,
        "last": {"epoch": trainer.epoch, "global_step": trainer.global_step, **trainer.callback_metrics},
        "test": {"model": "best" if checkpointer and checkpointer.best_path else "last", **test},
    }


def _table(report: dict[str, Any]) -> dict[str, float]:
    """The final metrics table: the best checkpoint's validation, the last one's, and the test."""
    best = {f"best {key}": value for key, value in (report["best"] or {}).items() if key.startswith("val/")}
    last = {f"last {key}": value for key, value in report["last"].items() if "/" in key}
    return {**best, **last, **{key: value for key, value in report["test"].items() if key != "model"}}


def _resume_command(run_dir: Path) -> str:
    """The command that continues this run: its folder holds its experiment and overrides (trainer/runs/from_folder.py)."""
    return shlex.join(["train", f"resume={run_dir}"])
