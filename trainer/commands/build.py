"""Everything a run needs, built from the composed config with `hydra.utils.instantiate`.

Each builder turns a failure into a UserError that names the config key, so a typo in a
`_target_` or a bad argument reads as one line, not a traceback.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
import inspect
from typing import Any, NamedTuple, cast

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.utils._pytree import tree_map
from torch.utils.data import default_collate

from decltrain.trainer.commands import inference_record
from decltrain.trainer.engine.callback import Callback
from decltrain.datasets.base import DataSplits, SizedDataset
from decltrain.datasets.folds import cross_validation
from decltrain.trainer.engine import checkpoint
from decltrain.trainer.engine.device import seed_everything
from decltrain.trainer.errors import UserError, first_line
from decltrain.trainer.runs.run_folder import RunFolder
from decltrain.trainer.tracking.loggers import Logger
from decltrain.trainer.engine.scheduling import LRSchedule
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.engine.optimizers import UNNAMED
from decltrain.trainer.engine.task import SeveralOptimizers, Task, check_task


def instantiate_node(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """`instantiate`, with errors reduced to one line naming `key` and the target."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        lines = [line.strip() for line in str(err).splitlines()
                 if line.strip() and not line.strip().startswith("full_key")]
        message = " ".join(lines).replace(", set env var HYDRA_FULL_ERROR=1 to see chained exception.", "")
        raise UserError(f"config `{key}` ({node.get('_target_', '?')}): {message}") from err


def data(cfg: DictConfig) -> DataSplits:
    """The dataset's splits; with `dataset.folds`, fold `dataset.fold` of a cross-validation (datasets/folds.py)."""
    node = copy.deepcopy(cfg.dataset)
    with open_dict(node):  # the cross-validation keys are not the builder's
        folds, fold = node.pop("folds", None), node.pop("fold", 0)
    splits = instantiate_node(node, "dataset")
    if not isinstance(splits, DataSplits):
        raise UserError(f"config `dataset`: {cfg.dataset._target_} returned {type(splits).__name__}, "
                        "not a datasets.DataSplits")
    # The folds are the dataset's, like its validation split: runs of other seeds validate on the same samples.
    seed = int(cfg.dataset.get("val_split_seed", 0))
    return cross_validation(splits, int(folds), int(fold), seed) if folds else splits


def model(cfg: DictConfig, splits: DataSplits) -> nn.Module:
    """Builds the model from what its constructor takes of the dataset's metadata (unless the config sets it)."""
    metadata: dict[str, Any] = {"num_classes": splits.num_classes, "input_shape": list(splits.input_shape)}
    if splits.vocab_size is not None:  # text datasets: the embedding's size
        metadata["vocab_size"] = splits.vocab_size
    return instantiate_node(cfg.model, "model", **_taken(cfg.model, metadata))


def model_and_task(cfg: DictConfig, splits: DataSplits,
                    device: torch.device | None = None) -> tuple[nn.Module, Task]:
    """The model (built on `device` if given: the meta device, see Placement.build_device) and the task,
    checked to fit each other and the data before anything trains."""
    with device or contextlib.nullcontext():
        built = model(cfg, splits)
    objective = task(cfg, splits)
    check_model_fits(built, objective, splits)
    return built, objective


def task(cfg: DictConfig, splits: DataSplits) -> Task:
    """The task of `task._target_`, given what its constructor takes of the dataset's metadata
    (num_classes, class_names, kind: the dataset's kind of targets) and the `loss` group's module."""
    node = cfg.get("task") or _task_before_the_group(splits)
    target = str(node.get("_target_", "?"))
    metadata: dict[str, Any] = {"num_classes": splits.num_classes, "class_names": list(splits.class_names),
                                "kind": splits.task}
    if "loss" in _parameters(target) and "loss" not in node:
        metadata["loss"] = loss(cfg)
    built = instantiate_node(node, "task", **_taken(node, metadata))
    check_task(built, target)
    return cast(Task, built)


def _task_before_the_group(splits: DataSplits) -> DictConfig:
    """Run folders written before the `task` group chose the task by the dataset's kind."""
    kind = "regression.Regression" if splits.task == "regression" else "classification.Classification"
    return OmegaConf.create({"_target_": f"decltrain.trainer.tasks.{kind}"})


def _taken(node: DictConfig, metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata the target of `node` takes as keywords and its config does not set."""
    wanted = _parameters(str(node.get("_target_", "")))
    return {key: value for key, value in metadata.items() if key not in node and (key in wanted or "**" in wanted)}


def _parameters(target: str) -> set[str]:
    """The keyword names a class or function takes (`**` when it takes any, or when it cannot be
    imported or inspected: everything is passed, and instantiation says what is wrong)."""
    try:
        signature = inspect.signature(get_object(target))
    except Exception:  # Hydra raises ImportError/ValueError variants for a bad path; builtins have no signature
        return {"**"}
    return {"**" if parameter.kind is parameter.VAR_KEYWORD else name
            for name, parameter in signature.parameters.items()}


def check_model_fits(model: nn.Module, task: Task, splits: DataSplits) -> None:
    """One forward pass on two validation samples, so a model that does not fit the data or the
    task fails before training starts, in one line naming the model, the task and the shapes."""
    collate = splits.loader.collate_fn or default_collate
    batch = collate([splits.val[i] for i in range(min(2, len(cast(SizedDataset, splits.val))))])
    if any(param.is_meta for param in model.parameters()):  # shapes only, no values: as the model's are
        batch = tree_map(lambda leaf: leaf.to("meta") if isinstance(leaf, torch.Tensor) else leaf, batch)
    inputs = task.model_inputs(batch)
    shape = tuple(inputs.shape[1:]) if isinstance(inputs, torch.Tensor) else "?"
    was_training = model.training
    model.eval()  # no dropout: the check must not draw from the RNG the run is seeded with
    try:
        with torch.no_grad():
            mismatch = task.output_mismatch(model, batch)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise UserError(f"model {type(model).__name__} does not fit dataset {splits.name or '?'} "
                        f"(input shape {shape}): {first_line(err)}; pick a model for this input or fix its size "
                        "settings") from None
    finally:
        model.train(was_training)
    if mismatch is not None:
        raise UserError(f"model {type(model).__name__} does not fit task {type(task).__name__} on dataset "
                        f"{splits.name or '?'} ({splits.task}, input shape {shape}): it {mismatch}")


class TrainedModel(NamedTuple):
    splits: DataSplits
    model: nn.Module
    task: Task
    checkpoint: Path


def trained_model(run: RunFolder, ckpt: str, data_needed: bool = True) -> TrainedModel:
    """A finished run's data and model, with the weights of its checkpoint `ckpt`, in eval mode.

    Without `data_needed` the data is the run folder's inference record where it has one
    (commands/inference_record.py): what predict and export-model need, without the dataset.
    """
    path = run.checkpoint(ckpt)
    with run.named_in_errors():
        seed_everything(run.config.seed)
        splits = (None if data_needed else inference_record.read(run.path)) or data(run.config)
        built, objective = model_and_task(run.config, splits)
        checkpoint.load_weights(built, path)
    return TrainedModel(splits, built.eval(), objective, path)


def loss(cfg: DictConfig) -> nn.Module:
    return instantiate_node(cfg.loss, "loss")


def optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer over all parameters, frozen ones included.

    Frozen parameters (requires_grad False) never get a gradient, so the optimizer skips them
    until a callback unfreezes them; holding them from the start keeps the optimizer's state
    layout fixed, so checkpoints resume across an unfreeze. `optimizer.param_groups` gives
    groups the model names (`model.param_groups()`, e.g. backbone/head) their own settings.
    """
    names = optimizer_names(cfg)
    if names:
        raise UserError(f"config `optimizer` names several optimizers ({_listed(names)}), which only `train` "
                        "with a task that names them uses (task=gan); here one is stepped: give optimizer one "
                        "_target_ (e.g. optimizer=adam)")
    group_settings = cfg.optimizer.get("param_groups")
    # `optimizer.param_groups` is a mapping (group name -> settings) in every config
    settings = cast(dict[str, Any], OmegaConf.to_container(group_settings, resolve=True)) if group_settings else {}
    return _optimizer_over(_without_param_groups(cfg.optimizer), "optimizer", _param_groups(model, settings))


def optimizers(cfg: DictConfig, model: nn.Module,
               objective: Task) -> torch.optim.Optimizer | dict[str, torch.optim.Optimizer]:
    """The run's optimizer; for a task with several (trainer/engine/task.py's `SeveralOptimizers`),
    each `optimizer.<name>` the task names, over the parameters the task gives it."""
    if not isinstance(objective, SeveralOptimizers):
        return optimizer(cfg, model)
    parameters = objective.optimizer_parameters(model)
    configured = optimizer_names(cfg)
    missing = [name for name in parameters if name not in configured]
    if missing:
        has = f"{_listed(configured)} only" if configured else \
            f"one optimizer ({cfg.optimizer.get('_target_', '?')}), not one per name"
        raise UserError(f"task {type(objective).__name__} needs {_listed(missing)}; the config has {has}")
    unused = [name for name in configured if name not in parameters]
    if unused:
        raise UserError(f"config {_listed(unused)}: task {type(objective).__name__} steps no optimizer of that "
                        f"name; its optimizers are {_listed(list(parameters))}")
    return {name: _optimizer_over(cfg.optimizer[name], f"optimizer.{name}", list(params))
            for name, params in parameters.items()}


def optimizer_names(cfg: DictConfig) -> list[str]:
    """The names of a config's several optimizers (`optimizer.<name>._target_`); [] when it gives one."""
    node = cfg.get("optimizer")
    if not isinstance(node, DictConfig) or "_target_" in node:
        return []
    return [str(name) for name, value in node.items() if isinstance(value, DictConfig) and "_target_" in value]


def _listed(names: list[str]) -> str:
    return ", ".join(f"optimizer.{name}" for name in names)


def _without_param_groups(node: DictConfig) -> DictConfig:
    node = node.copy()
    with open_dict(node):
        node.pop("param_groups", None)
    return node


def _optimizer_over(node: DictConfig, key: str, params: list[Any]) -> torch.optim.Optimizer:
    factory = instantiate_node(node, key)
    try:
        return factory(params)
    except (TypeError, ValueError) as err:
        raise UserError(f"config `{key}` ({node._target_}): {err}") from None


def check_optimization(cfg: DictConfig) -> None:
    """The optimizer and scheduler settings tried on a stand-in parameter, so torch's own checks
    (a negative lr, betas out of range, a scheduler's arguments) fail before anything is built
    or printed; a config's several optimizers each with its schedule. Per-group settings
    (`optimizer.param_groups`) need the model: checked when it exists."""
    names = optimizer_names(cfg)
    nodes = {name: cfg.optimizer[name] for name in names} or {UNNAMED: _without_param_groups(cfg.optimizer)}
    for name, node in nodes.items():
        stand_in = [nn.Parameter(torch.zeros(1))]
        lr_schedule(cfg, _optimizer_over(node, f"optimizer.{name}" if name else "optimizer", stand_in), name)


def _param_groups(model: nn.Module, settings: dict[str, Any]) -> list[dict[str, Any]]:
    param_groups = getattr(model, "param_groups", None)
    named = param_groups() if callable(param_groups) else {}
    if not named:
        if settings:
            raise UserError(f"optimizer.param_groups is set but model {type(model).__name__} names no parameter "
                            "groups; remove it or use a model with param_groups() (e.g. TorchvisionClassifier)")
        return [{"params": list(model.parameters())}]
    unknown = sorted(set(settings) - set(named))
    if unknown:
        raise UserError(f"optimizer.param_groups.{unknown[0]}: model {type(model).__name__} has the groups "
                        f"{', '.join(named)}")
    return [{"params": params, **(settings.get(name) or {})} for name, params in named.items() if params]


def lr_schedule(cfg: DictConfig, optim: torch.optim.Optimizer, name: str = UNNAMED) -> LRSchedule:
    """The `scheduler` group's schedule for `optim`; a named optimizer's is `scheduler.<name>` where
    the config gives one, else its own copy of the `scheduler` group's."""
    own = cfg.scheduler.get(name) if name else None
    key, sched = (f"scheduler.{name}", own) if own is not None else ("scheduler", cfg.scheduler)
    scheduler = None
    if sched.get("lr_scheduler") is not None:
        factory = instantiate_node(sched.lr_scheduler, f"{key}.lr_scheduler")
        try:
            scheduler = factory(optim)
        except (TypeError, ValueError) as err:
            raise UserError(f"config `{key}.lr_scheduler` ({sched.lr_scheduler._target_}): {err}") from None
    return LRSchedule(optim, scheduler, interval=sched.get("interval", "epoch"),
                      monitor=sched.get("monitor"), warmup_steps=sched.get("warmup_steps", 0))


def lr_schedules(cfg: DictConfig, optimizers: torch.optim.Optimizer | dict[str, torch.optim.Optimizer]
                 ) -> LRSchedule | dict[str, LRSchedule]:
    """The schedule of the run's optimizer, or one for each of a task's several."""
    if isinstance(optimizers, dict):
        return {name: lr_schedule(cfg, optim, name) for name, optim in optimizers.items()}
    return lr_schedule(cfg, optimizers)


def callbacks(cfg: DictConfig) -> dict[str, Callback]:
    """The callbacks in config order; `callbacks.NAME=null` leaves one out."""
    built: dict[str, Callback] = {}
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        callback = instantiate_node(node, f"callbacks.{name}")
        if not isinstance(callback, Callback):
            raise UserError(f"config `callbacks.{name}`: {node._target_} is not a callbacks.Callback")
        built[name] = callback
    return built


def loggers(cfg: DictConfig, run_dir: Path) -> dict[str, Logger]:
    """The loggers of `logger.*` by name, each told the run folder (see trainer/tracking/loggers.py)."""
    return {str(name): instantiate_node(node, f"logger.{name}", log_dir=str(run_dir))
            for name, node in (cfg.get("logger") or {}).items() if node is not None}


def trainer_settings(cfg: DictConfig) -> TrainerSettings:
    """`trainer.*` and the run's seed as checked settings: what a run builds first."""
    values = cast(dict[str, Any], OmegaConf.to_container(cfg.trainer, resolve=True, enum_to_str=True))
    try:
        return TrainerSettings(seed=cfg.seed, **values)
    except TypeError as err:
        raise UserError(f"config `trainer`: {first_line(err)}") from None
