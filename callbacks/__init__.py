"""Built-in callbacks, one file each; the events they hook into are documented in trainer/engine/callback.py."""
from decltrain.callbacks.backbone_unfreeze import BackboneUnfreeze
from decltrain.trainer.engine.callback import Callback, TrainerView
from decltrain.callbacks.early_stopping import EarlyStopping
from decltrain.callbacks.ema import EMA
from decltrain.callbacks.gradient_clipping import GradientClipping
from decltrain.callbacks.lr_monitor import LearningRateMonitor
from decltrain.callbacks.model_checkpoint import ModelCheckpoint
from decltrain.callbacks.model_summary import ModelSummary
from decltrain.callbacks.optuna_pruning import OptunaPruning
from decltrain.callbacks.progress import RichProgressBar
from decltrain.callbacks.swa import SWA
from decltrain.callbacks.throughput import ThroughputMonitor

__all__ = ["EMA", "SWA", "BackboneUnfreeze", "Callback", "EarlyStopping", "GradientClipping",
           "LearningRateMonitor", "ModelCheckpoint", "ModelSummary", "OptunaPruning", "RichProgressBar",
           "ThroughputMonitor", "TrainerView"]
