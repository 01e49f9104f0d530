"""Where the model runs and how: device, numeric precision, DDP or FSDP, SyncBatchNorm, torch.compile, memory layout.

Launching happens before the Trainer exists (trainer/commands/launch.py): here the world of
processes is given, and settings that cannot work in it or on this machine are refused. The
`train` command builds a Placement right after the settings, so those refusals come before any
data or model is built; a Trainer built without one makes its own.
"""
from __future__ import annotations

import contextlib
from typing import Any, NamedTuple, cast

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel
from torch.utils._pytree import tree_map

from decltrain.trainer.engine import checkpoint, distributed, sharding
from decltrain.trainer.engine.precision import Precision
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.errors import UserError


class Placed(NamedTuple):
    """The model as the step trains it, as evaluation runs it, and its DDP wrapper or FSDP root
    (both None in one process)."""
    train_module: nn.Module
    eval_module: nn.Module
    ddp: DistributedDataParallel | None
    fsdp: FSDPModule | None = None

    def gradient_sync(self, last_of_group: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP all-reduces (FSDP reduce-scatters) gradients only on the last micro-batch of an accumulation group."""
        if self.fsdp is not None:
            self.fsdp.set_requires_gradient_sync(last_of_group)
        if self.ddp is None or last_of_group:
            return contextlib.nullcontext()
        return self.ddp.no_sync()


class Placement:
    def __init__(self, settings: TrainerSettings) -> None:
        self.world_size = distributed.world_size()
        devices = settings.devices
        if devices > 1 and self.world_size == 1:
            raise UserError(f"trainer.devices={devices} needs {devices} processes; start the run with the `train` "
                            "command or torchrun, not by building a Trainer in one process")
        if settings.strategy == "ddp" and self.world_size == 1:
            raise UserError("trainer.strategy=ddp needs several processes: set trainer.devices=N (N > 1) or start "
                            "with torchrun; trainer.strategy=auto runs one process")
        self.compile_mode = settings.compile_mode
        # In one process there is nothing to shard over: fsdp trains the plain model (a sharded run resumes so).
        self.fsdp = settings.fsdp if settings.strategy == "fsdp" and self.world_size > 1 else None
        if self.fsdp is not None and self.compile_mode:
            raise UserError("trainer.compile with trainer.strategy=fsdp is not supported yet; set trainer.compile=false")
        self.device = distributed.device(settings.accelerator)
        if settings.sync_batchnorm and self.device.type != "cuda":
            raise UserError("trainer.sync_batchnorm=true needs CUDA devices (torch's SyncBatchNorm has no CPU "
                            "kernel); set trainer.sync_batchnorm=false on CPU")
        self.sync_batchnorm = settings.sync_batchnorm
        if self.fsdp is not None and self.fsdp.cpu_offload and self.device.type != "cuda":
            raise UserError("trainer.fsdp.cpu_offload=true needs CUDA devices (the shards wait on the CPU between "
                            "uses on the GPU); on CPU they are there already: set trainer.fsdp.cpu_offload=false")
        self.precision = Precision(settings.precision, self.device)
        self.channels_last = False

    @property
    def build_device(self) -> torch.device | None:
        """Where the model is built: the meta device (no memory) with `trainer.fsdp.meta_init`, else the default."""
        return torch.device("meta") if self.fsdp is not None and self.fsdp.meta_init else None

    @property
    def shards(self) -> bool:
        """True when the model is sharded over the ranks (trainer.strategy=fsdp in several processes)."""
        return self.fsdp is not None

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Placed:
        """`model` on the device, under SyncBatchNorm, DDP or FSDP, and torch.compile as configured.

        DDP wraps before compiling, as PyTorch recommends (the compiler then splits the graph at
        DDP's gradient buckets). Evaluation runs the module without DDP: ranks may hold shards
        of unequal length, and DDP's forward may call collectives. FSDP shards `model` in place
        (built on the meta device: then each rank initialises its shards);
        `optimizer`, built on its unsharded parameters, is pointed at the shards.
        """
        if self.sync_batchnorm and self.world_size > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.channels_last = uses_channels_last(model, self.device)
        layout = torch.channels_last if self.channels_last else torch.preserve_format
        on_meta = any(param.is_meta for param in model.parameters())
        if not on_meta:
            model = model.to(self.device, memory_format=layout)  # type: ignore[call-overload]  # torch's overloads omit this pair
        ddp = fsdp = None
        if self.fsdp is not None:
            names = {id(param): name for name, param in model.named_parameters()}
            if on_meta:
                sharding.check_meta_init(model)
            fsdp = sharding.shard(model, self.fsdp, self.precision.dtype)
            if on_meta:
                sharding.materialize(model, self.device)
            if optimizer is not None:
                sharding.adopt_sharded_parameters(optimizer, names, model)
        trained: nn.Module = model
        evaluated: nn.Module = model
        if self.world_size > 1 and fsdp is None:
            trained = ddp = DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)
        if self.compile_mode:
            trained = cast(nn.Module, torch.compile(trained, mode=self.compile_mode))
            evaluated = trained if ddp is None else cast(nn.Module, torch.compile(model, mode=self.compile_mode))
        return Placed(trained, evaluated, ddp, fsdp)

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's whole weights with plain names (sharded: gathered on rank 0, a collective)."""
        return sharding.consolidated_weights(model) if self.shards else checkpoint.unwrap(model).state_dict()

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """`optimizer.state_dict()`; sharded: the same whole state, gathered on rank 0 (a collective)."""
        return sharding.consolidated_optimizer(model, optimizer) if self.shards else optimizer.state_dict()

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """A whole optimizer state (as `optimizer_state` gives it) into `optimizer`; sharded: each rank its shard."""
        if self.shards:
            sharding.load_full_optimizer(model, optimizer, state)
        else:
            optimizer.load_state_dict(state)

    def forwards_to_match(self, count: int) -> int:
        """Under FSDP each forward gathers parameters with every rank: a rank that ran `count` evaluation
        batches runs this many more (their outputs unused), so all ranks run as many as the one with most."""
        return distributed.max_over_ranks(count, self.device) - count if self.shards else 0

    def batch(self, batch: Any) -> Any:
        """The batch on the device, whatever its nesting; image batches (4-D floating-point
        tensors) in the model's memory layout."""
        batch = to_device(batch, self.device)
        if self.channels_last:
            batch = tree_map(_channels_last, batch)
        return batch


def uses_channels_last(model: nn.Module, device: torch.device) -> bool:
    """NHWC memory for convolutional models on CUDA, where cuDNN's channels-last kernels pay.

    On CPU the MNIST CNN measured slower in NHWC (the machine of scripts/benchmark.py), so CPU
    runs keep the default layout.
    """
    return device.type == "cuda" and any(isinstance(module, nn.Conv2d) for module in model.modules())


def to_device(batch: Any, device: torch.device) -> Any:
    """Moves every tensor of a batch (at any depth of tuples, lists and dicts) to `device`
    without blocking the host; other leaves stay as they are."""
    return tree_map(lambda leaf: leaf.to(device, non_blocking=True) if isinstance(leaf, torch.Tensor) else leaf, batch)


def _channels_last(leaf: Any) -> Any:
    if isinstance(leaf, torch.Tensor) and leaf.ndim == 4 and leaf.is_floating_point():
        return leaf.contiguous(memory_format=torch.channels_last)
    return leaf
