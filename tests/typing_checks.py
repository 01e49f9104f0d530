"""Statements for mypy alone (scripts/typecheck.py checks this file; pytest never imports it).

The callbacks' contract, `TrainerView`, is met by the engine's Trainer: an attribute or method
removed from the Trainer, or given another type, fails the type check here.
"""
from __future__ import annotations

from decltrain.trainer.engine.callback import TrainerView
from decltrain.trainer.engine.loop import Trainer


def trainer_is_a_view(trainer: Trainer) -> TrainerView:
    return trainer
