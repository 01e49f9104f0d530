"""Statements for mypy alone (scripts/typecheck.py checks this file; pytest never imports it).

The callbacks' contract, `TrainerView`, is met by the engine's Trainer: an attribute or method
removed from the Trainer, or given another type, fails the type check here. The same holds the
built-in tasks (and the worked example of docs/tasks.md) to the task contract, `Task`.
"""
from __future__ import annotations

from decltrain.trainer.engine.callback import TrainerView
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.task import Task
from decltrain.trainer.tasks.classification import Classification
from decltrain.trainer.tasks.model_loss import ModelLoss
from decltrain.trainer.tasks.regression import Regression


def trainer_is_a_view(trainer: Trainer) -> TrainerView:
    return trainer


def built_in_tasks_keep_the_task_contract(classification: Classification, regression: Regression,
                                          model_loss: ModelLoss) -> list[Task]:
    return [classification, regression, model_loss]
