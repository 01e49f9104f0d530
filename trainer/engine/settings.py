"""The Trainer's settings (`trainer:` in the config) as one value, checked when it is made.

Built first, before any data, model or output exists, so an impossible setting costs the user
one line (torchtune's recipes reject bad flags in their constructor the same way). Checks that
need the machine or the process group (CUDA present, the DDP world) run when the Trainer places
itself (trainer/engine/placement.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from decltrain.trainer.engine.precision import check_choice
from decltrain.trainer.engine.profiler import check_kind
from decltrain.trainer.engine.time_budget import parse_duration
from decltrain.trainer.errors import UserError

STRATEGIES = ("auto", "ddp")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TrainerSettings:
    """Plain values; the field names are the config's `trainer.*` keys (plus the run's `seed`)."""
    accelerator: str = "auto"
    strategy: str = "auto"
    devices: int = 1
    sync_batchnorm: bool = False
    compile: bool | str = False
    precision: str = "32"
    max_epochs: int = 10
    max_steps: int = -1
    accumulate_grad_batches: int = 1
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 50
    fast_dev_run: bool = False
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    deterministic: bool = False
    cudnn_benchmark: bool = False
    seed: int = 42
    nonfinite_loss: str = "stop"
    init_from: str | None = None
    init_strict: bool = True
    val_check_interval: int | None = None
    max_time: str | float | None = None
    overfit_batches: int = 0
    detect_anomaly: bool = False
    profiler: str | None = None
    profiler_schedule: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in (("max_epochs", self.max_epochs), ("accumulate_grad_batches", self.accumulate_grad_batches),
                           ("check_val_every_n_epoch", self.check_val_every_n_epoch),
                           ("log_every_n_steps", self.log_every_n_steps), ("devices", self.devices),
                           ("val_check_interval", 1 if self.val_check_interval is None else self.val_check_interval)):
            if value < 1:
                raise UserError(f"trainer.{key}={value} must be at least 1")
        # Enum members of the config schema (trainer/commands/schema.py) arrive as their values.
        object.__setattr__(self, "accelerator", str(getattr(self.accelerator, "value", self.accelerator)))
        object.__setattr__(self, "strategy", str(getattr(self.strategy, "value", self.strategy)))
        object.__setattr__(self, "precision", str(self.precision))
        if self.strategy not in STRATEGIES:
            raise UserError(f"trainer.strategy={self.strategy!r} is not implemented; use auto (one process, DDP when "
                            "trainer.devices > 1 or under torchrun) or ddp (the same, but refused in one process)")
        if self.overfit_batches < 0:
            raise UserError(f"trainer.overfit_batches={self.overfit_batches} must be 0 (off) or a number of batches")
        if self.nonfinite_loss not in ("stop", "skip"):
            raise UserError(f"trainer.nonfinite_loss={self.nonfinite_loss!r} is not valid; use 'stop' or 'skip'")
        check_choice(self.precision)
        compile_mode(self.compile)
        check_kind(self.profiler)
        if self.max_time is not None:
            parse_duration(self.max_time)
        if self.fast_dev_run:  # one epoch, every step logged: the values say what runs (`limits`: one batch)
            object.__setattr__(self, "max_epochs", 1)
            object.__setattr__(self, "log_every_n_steps", 1)

    @property
    def compile_mode(self) -> str | None:
        return compile_mode(self.compile)

    @property
    def limits(self) -> dict[str, int | float | None]:
        """Batches per pass of each split; `overfit_batches` trains and validates on the same few."""
        one_batch = 1 if self.fast_dev_run else None
        return {"train": one_batch or self.overfit_batches or self.limit_train_batches,
                "val": one_batch or self.overfit_batches or self.limit_val_batches,
                "test": one_batch or self.limit_test_batches}


def compile_mode(setting: Any) -> str | None:
    """`trainer.compile` as a torch.compile mode: false -> none, true -> `default`, or a mode by name.

    `reduce-overhead` records CUDA graphs: one launch replays a whole step, for small models
    whose steps are bound by kernel launches (on CPU it compiles like `default`).
    """
    if setting is None or setting is False:
        return None
    if setting is True:
        return "default"
    if setting in COMPILE_MODES:
        return str(setting)
    raise UserError(f"trainer.compile={setting!r} is not valid; use true, false or a torch.compile mode: "
                    + ", ".join(COMPILE_MODES))
