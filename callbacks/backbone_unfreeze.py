"""Unfreezes a model's backbone at a given epoch: the second stage of transfer learning."""
from __future__ import annotations

import logging

from decltrain.trainer.engine.callback import Callback, TrainerView
from decltrain.models.param_groups import param_groups
from decltrain.trainer.engine.checkpoint import unwrap
from decltrain.trainer.errors import UserError

log = logging.getLogger("decltrain")


class BackboneUnfreeze(Callback):
    """From epoch `epoch` on (0-based), every backbone parameter trains.

    The optimizer holds the frozen parameters from the start (trainer/commands/build.py), with the
    backbone's own settings from `optimizer.param_groups.backbone` (e.g. a lower `lr`), so
    unfreezing only flips `requires_grad`. The check runs at the start of every epoch, so a run
    resumed after the unfreeze epoch is unfrozen again and nothing needs to be checkpointed.
    Works with models offering `param_groups()` with a `backbone` group (TorchvisionClassifier).
    """

    works_on_shards = False  # FSDP fixes which parameters train when it shards the model

    def __init__(self, epoch: int = 1) -> None:
        if epoch < 0:
            raise UserError(f"callbacks.backbone_unfreeze.epoch={epoch} must be 0 or more")
        self.epoch = epoch

    def on_fit_start(self, trainer: TrainerView) -> None:
        model = unwrap(trainer.model)
        if "backbone" not in param_groups(model):
            raise UserError(f"callbacks.backbone_unfreeze: model {type(model).__name__} has no "
                            "backbone parameter group; use a torchvision model or remove the callback")
        # DDP registers the trainable parameters when it wraps the model: parameters unfrozen
        # later would not have their gradients averaged, and the replicas would drift apart.
        if trainer.world_size > 1:
            raise UserError("callbacks.backbone_unfreeze does not work with several processes (DDP); train the "
                            "stages as two runs (the second with model.freeze_backbone=false and trainer.init_from)")

    def on_train_epoch_start(self, trainer: TrainerView) -> None:
        backbone = param_groups(unwrap(trainer.model))["backbone"]
        if trainer.epoch >= self.epoch and not all(p.requires_grad for p in backbone):
            for param in backbone:
                param.requires_grad_(True)
            log.info("epoch %d: backbone unfrozen (%s parameters now train)", trainer.epoch,
                     f"{sum(p.numel() for p in backbone):,}")

