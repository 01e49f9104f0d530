"""The Trainer's settings (`trainer:` in the config) as one value, checked when it is made.

Each setting is declared here once, with its default and what it means: the config schema
(trainer/commands/schema.py) is derived from these fields, so `train --cfg job` shows these
defaults and `trainer.NAME=...` accepts exactly these names.

Built first, before any data, model or output exists, so an impossible setting costs the user
one line (torchtune's recipes reject bad flags in their constructor the same way). Checks that
need the machine or the process group (CUDA present, the DDP world) run when the Trainer places
itself (trainer/engine/placement.py). This module imports no torch: `train --help` reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from decltrain.trainer.engine.time_budget import parse_duration
from decltrain.trainer.errors import UserError

ACCELERATORS = ("auto", "cpu", "cuda")
STRATEGIES = ("auto", "ddp", "fsdp")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PROFILERS = ("simple", "pytorch")
NONFINITE_LOSS = ("stop", "skip")
PROFILER_SCHEDULE = {"wait": 1, "warmup": 1, "active": 3}
POINTS_PER_EPOCH = 20  # what a null `log_every_n_steps` aims for on short epochs
DEFAULT_LOGGING_INTERVAL = 50  # and its longest interval, on long ones


@dataclass
class FsdpSettings:
    """`trainer.fsdp.*`: how `trainer.strategy=fsdp` shards the model (trainer/engine/sharding.py).

    Not frozen: it is also the config schema of `trainer.fsdp`, which Hydra overrides key by key.
    """
    # class names of the modules that become shard units (each gathers its parameters only for its
    # own forward and backward); null: every direct child of the model that holds parameters
    shard_modules: list[str] | None = None
    reshard_after_forward: bool = True  # free gathered parameters after forward (less memory, a second gather in backward)
    cpu_offload: bool = False  # parameters, gradients and optimizer state live on the CPU between uses
    activation_checkpointing: bool = False  # each shard unit recomputes its activations in backward
    async_save: bool = False  # checkpoint shards are written in the background while training continues
    # the model is built on the meta device and each rank initialises only its shards (see sharding.materialize)
    meta_init: bool = False


@dataclass(frozen=True)
class TrainerSettings:
    """Plain values; the field names are the config's `trainer.*` keys, except `seed` (the config's top-level `seed`)."""
    accelerator: str = "auto"  # auto | cpu | cuda
    # auto: DDP whenever devices > 1 or under torchrun | ddp: the same, refused in one process |
    # fsdp: parameters, gradients and optimizer state sharded over the ranks (FSDP2; see trainer.fsdp)
    strategy: str = "auto"
    fsdp: FsdpSettings = field(default_factory=FsdpSettings)
    # processes on this machine, one per GPU (gloo on CPU, NCCL on GPUs); torchrun's --nproc_per_node wins
    devices: int = 1
    sync_batchnorm: bool = False  # BatchNorm statistics over all ranks (DDP on CUDA)
    # false | true | a torch.compile mode: reduce-overhead (CUDA graphs), max-autotune, ...; checkpoints keep plain names
    compile: bool | str = False
    precision: str = "32"  # 32 | 16-mixed (CUDA) | bf16-mixed
    accumulate_grad_batches: int = 1  # optimizer step every N batches
    max_epochs: int = 10
    max_steps: int = -1  # optimizer steps; -1 = no limit
    check_val_every_n_epoch: int = 1
    # the loss reaches Python only on these steps; null: about 20 points per epoch, at most every 50 steps
    log_every_n_steps: int | None = None
    fast_dev_run: bool = False  # one batch of train, val and test; writes no checkpoints, logs or metrics
    limit_train_batches: int | float | None = None  # int = batches, float = fraction of the epoch
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    deterministic: bool = False
    cudnn_benchmark: bool = False
    nonfinite_loss: str = "stop"  # stop | skip (skip checks every batch: one host sync per batch)
    init_from: str | None = None  # checkpoint whose weights start this run (fine-tuning; fresh optimizer)
    init_strict: bool = True  # false: load what fits, report missing/unexpected/mismatched keys
    # Validation inside the epoch too (never twice at one step); null = only at epoch ends.
    # A float in (0, 1] is a fraction of the training epoch (0.5: twice per epoch); an int N >= 1,
    # every N optimizer steps.
    val_check_interval: int | float | None = None
    # validation of the untrained model before the first step (not when resuming): a check of the
    # validation code before a long epoch, and the start of every val/ curve (step 0)
    validate_on_start: bool = True
    max_time: str | float | None = None  # time budget, DD:HH:MM:SS or seconds: stop, checkpoint, test, exit 0
    overfit_batches: int = 0  # N > 0: train and validate on the same N batches (debugging)
    detect_anomaly: bool = False  # torch.autograd anomaly detection: names the op that made a NaN (slow)
    profiler: str | None = None  # simple (a table of where the time went) | pytorch (a torch.profiler trace)
    # steps of the pytorch profiler's one cycle
    profiler_schedule: dict[str, int] = field(default_factory=lambda: dict(PROFILER_SCHEDULE))
    seed: int = 42  # python, numpy and torch (0 is a seed like any other); the config's top-level `seed`

    def __post_init__(self) -> None:
        for key, value in (("max_epochs", self.max_epochs), ("accumulate_grad_batches", self.accumulate_grad_batches),
                           ("check_val_every_n_epoch", self.check_val_every_n_epoch),
                           ("log_every_n_steps", self.log_every_n_steps), ("devices", self.devices)):
            if value is not None and value < 1:
                raise UserError(f"trainer.{key}={value} must be at least 1")
        object.__setattr__(self, "precision", str(self.precision))
        if self.accelerator not in ACCELERATORS:
            raise UserError(f"trainer.accelerator={self.accelerator!r} is not valid; use one of {', '.join(ACCELERATORS)}")
        if self.strategy not in STRATEGIES:
            raise UserError(f"trainer.strategy={self.strategy!r} is not implemented; use auto (one process, DDP when "
                            "trainer.devices > 1 or under torchrun), ddp (the same, but refused in one process) or "
                            "fsdp (the model sharded over the processes)")
        object.__setattr__(self, "fsdp", fsdp_settings(self.fsdp))
        if self.overfit_batches < 0:
            raise UserError(f"trainer.overfit_batches={self.overfit_batches} must be 0 (off) or a number of batches")
        if self.nonfinite_loss not in NONFINITE_LOSS:
            raise UserError(f"trainer.nonfinite_loss={self.nonfinite_loss!r} is not valid; use 'stop' or 'skip'")
        check_precision(self.precision)
        compile_mode(self.compile)
        check_profiler(self.profiler)
        check_val_check_interval(self.val_check_interval)
        if self.max_time is not None:
            parse_duration(self.max_time)
        if self.fast_dev_run:  # one epoch, every step logged: the values say what runs (`limits`: one batch)
            object.__setattr__(self, "max_epochs", 1)
            object.__setattr__(self, "log_every_n_steps", 1)
            object.__setattr__(self, "validate_on_start", False)

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

    def logging_interval(self, batches_per_epoch: int) -> int:
        """`log_every_n_steps`, or where it is null, every max(1, min(50, optimizer steps per epoch // 20))
        steps: a short epoch still draws a curve (about 20 points), a long one costs a host sync
        every 50 steps at most, as Lightning's default."""
        if self.log_every_n_steps is not None:
            return self.log_every_n_steps
        return max(1, min(DEFAULT_LOGGING_INTERVAL, self.optimizer_steps(batches_per_epoch) // POINTS_PER_EPOCH))

    def validates_after_step(self, step: int, batches_done: int, batches_per_epoch: int) -> bool:
        """`val_check_interval`: whether optimizer step `step` (of the run), which ended at batch
        `batches_done` of an epoch of `batches_per_epoch`, is followed by a validation.

        An int N counts the run's optimizer steps: every N-th. A fraction counts the epoch's
        optimizer steps from its start, as Lightning does: every max(1, int(fraction * optimizer
        steps per epoch)) of them. The loop itself decides about the epoch's last step (which the
        epoch's end validates).
        """
        interval = self.val_check_interval
        if interval is None:
            return False
        if isinstance(interval, int):
            return step % interval == 0
        return self.optimizer_steps(batches_done) % max(1, int(interval * self.optimizer_steps(batches_per_epoch))) == 0

    def optimizer_steps(self, batches: int) -> int:
        """Optimizer steps over `batches` batches from an epoch's start (the last group may be short)."""
        return -(-batches // self.accumulate_grad_batches)


def fsdp_settings(value: FsdpSettings | dict[str, Any] | None) -> FsdpSettings:
    """`trainer.fsdp` as FsdpSettings (the config gives a mapping), unknown keys refused."""
    if isinstance(value, FsdpSettings):
        return value
    known = {setting.name for setting in fields(FsdpSettings)}
    unknown = sorted(set(value or {}) - known)
    if unknown:
        raise UserError(f"trainer.fsdp.{unknown[0]} is not a setting; use one of {', '.join(sorted(known))}")
    settings = FsdpSettings(**(value or {}))
    if settings.shard_modules is not None:
        settings.shard_modules = [str(name) for name in settings.shard_modules]
    return settings


def check_precision(precision: str) -> str:
    """`precision` as a name of PRECISIONS, or a UserError listing them."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise UserError(f"trainer.precision={precision!r} is not valid; use one of {', '.join(PRECISIONS)}")
    return precision


def check_profiler(kind: str | None) -> None:
    if kind is not None and kind not in PROFILERS:
        raise UserError(f"trainer.profiler={kind!r} is not valid; use simple, pytorch or null")


def check_val_check_interval(interval: Any) -> None:
    """None, an int of at least 1 (optimizer steps) or a float in (0, 1] (a fraction of the epoch)."""
    steps = isinstance(interval, int) and not isinstance(interval, bool) and interval >= 1
    fraction = isinstance(interval, float) and 0 < interval <= 1
    if interval is not None and not steps and not fraction:
        raise UserError(f"trainer.val_check_interval={interval!r} is not valid; use a fraction of the training epoch "
                        "in (0, 1] (0.5: twice per epoch), a number of optimizer steps (an integer, at least 1), "
                        "or null (only at epoch ends)")


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
