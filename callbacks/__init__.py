"""Built-in callbacks, one file each; `callbacks.base` documents the events they hook into."""
from callbacks.backbone_unfreeze import BackboneUnfreeze
from callbacks.base import Callback
from callbacks.early_stopping import EarlyStopping
from callbacks.gradient_clipping import GradientClipping
from callbacks.lr_monitor import LearningRateMonitor
from callbacks.model_checkpoint import ModelCheckpoint
from callbacks.progress import RichProgressBar
from callbacks.throughput import ThroughputMonitor

__all__ = ["BackboneUnfreeze", "Callback", "EarlyStopping", "GradientClipping", "LearningRateMonitor",
           "ModelCheckpoint", "RichProgressBar", "ThroughputMonitor"]
