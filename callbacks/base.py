"""The callback events: the only way callbacks see the training loop.

Order of events in `Trainer.fit` (the loop itself is trainer/engine/loop.py):

    on_fit_start
      for each epoch:
        on_train_epoch_start
          for each batch:
            on_train_batch_start
            forward, loss, backward                   (accumulated over micro-batches)
            on_before_optimizer_step                  (gradients final and unscaled: clip here)
            optimizer.step, scheduler (per step)
            on_train_batch_end
            [every val_check_interval steps, mid-epoch:
             on_validation_start, validation, on_validation_end(metrics)   (checkpoints written here)]
        -- only when all the epoch's batches trained (not after a stop inside it) --
        on_validation_start                           (every check_val_every_n_epoch)
        validation
        scheduler (per epoch)
        on_validation_end(metrics)                   (metrics: {"val/loss": ..., "val/acc": ...})
        on_train_epoch_end                            (checkpoints are written here; they resume
                                                       at the next epoch)
    on_fit_end                                        (only when fit finished normally)
    on_exception(error)                               (instead of on_fit_end; then the error rises)

`on_train_batch_start`, `on_before_optimizer_step` and `on_train_batch_end` run once per
optimizer step (after the last micro-batch of a gradient-accumulation group). A step skipped
for a non-finite loss (`trainer.nonfinite_loss=skip`) runs `on_train_batch_start` and
`on_train_batch_end` (with `global_step` unchanged), not `on_before_optimizer_step`.

Checkpoint files: `Trainer.state_dict()` builds the checkpoint dict, then calls
`on_save_checkpoint(state)`, where a callback may edit it (weight averaging puts the averaged
weights under "model" and the raw ones under "training_weights"); `Trainer.load_state_dict`
calls `on_load_checkpoint(state)` before it loads anything. Callbacks with
`writes_checkpoints = True` run after all others on every event, so the files they write hold
every other callback's update of that event.

Trainer attributes a callback may read: `model`, `optimizer`, `epoch`, `global_step`,
`batch_idx`, `position` (where a checkpoint written now resumes: epoch, batch), `num_train_batches`,
`max_epochs`, `run_dir`, `is_global_zero`, `world_size` (DDP processes), `device`, `train_loader`,
`splits` (the data), `fast_dev_run`, `should_log` (this step's metrics are being logged),
`last_loss` (a float, set on logging steps), `callback_metrics` (the latest validation metrics),
`validating_mid_epoch` (True during a `val_check_interval` validation). A callback may set
`trainer.should_stop = True`, call
`trainer.log_metrics({...})` and `trainer.save_checkpoint(path)` (on every rank: only rank 0
writes), and in `on_fit_end` add summary values to `callback_metrics`, which then join the
final metrics table and metrics.json.

Only the events a callback overrides are called, so an idle callback costs nothing per step.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from decltrain.trainer.engine.loop import Trainer

EVENTS = (
    "on_fit_start", "on_train_epoch_start", "on_train_batch_start", "on_before_optimizer_step",
    "on_train_batch_end", "on_validation_start", "on_validation_end", "on_train_epoch_end", "on_fit_end",
    "on_exception", "on_save_checkpoint", "on_load_checkpoint",
)


class Callback:
    """Base class: override the events you need, and `state_dict` if you keep state."""

    writes_checkpoints: bool = False  # True: runs after every other callback on each event

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_train_epoch_start(self, trainer: Trainer) -> None: ...
    def on_train_batch_start(self, trainer: Trainer) -> None: ...
    def on_before_optimizer_step(self, trainer: Trainer) -> None: ...
    def on_train_batch_end(self, trainer: Trainer) -> None: ...
    def on_validation_start(self, trainer: Trainer) -> None: ...
    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...
    def on_train_epoch_end(self, trainer: Trainer) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...
    def on_exception(self, trainer: Trainer, error: BaseException) -> None: ...
    def on_save_checkpoint(self, trainer: Trainer, state: dict[str, Any]) -> None: ...
    def on_load_checkpoint(self, trainer: Trainer, state: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this callback (plain values and tensors only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def overrides(callback: Callback, event: str) -> bool:
    """True when `callback` does something on `event` (its class overrides the base method)."""
    return getattr(type(callback), event) is not getattr(Callback, event)
