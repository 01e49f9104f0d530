"""The process group of one worker: torchrun's environment in, torch.distributed collectives out.

Every worker is started by torch elastic (`torchrun`, or `train trainer.devices=N`, which starts
torch elastic itself; see trainer/commands/launch.py), so RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous
address come from the environment. Outside torchrun nothing here starts a group and every helper
is a no-op for a world of one, so single-process code pays nothing.
"""
from __future__ import annotations

import io
import os
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from decltrain.trainer.engine.device import resolve_device
from decltrain.trainer.errors import UserError

T = TypeVar("T")

# A rank that dies is noticed by torch elastic, which ends the others at once; this bounds the
# wait only for failures it cannot see (a node that vanished, a stuck file system).
TIMEOUT = timedelta(minutes=30)


def env_world_size() -> int:
    """Processes in the job according to torchrun's environment (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_global_zero() -> bool:
    return rank() == 0


def device(accelerator: str) -> torch.device:
    """The device of this worker: `cuda:LOCAL_RANK` for a CUDA worker of several, else as asked."""
    chosen = resolve_device(accelerator)
    if chosen.type == "cuda" and env_world_size() > 1:
        chosen = torch.device("cuda", local_rank())
        torch.cuda.set_device(chosen)
    return chosen


def init(accelerator: str, devices: int) -> None:
    """Joins the process group torchrun prepared: NCCL for CUDA workers, gloo on CPU."""
    world = env_world_size()
    if world == 1 or dist.is_initialized():
        return
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if devices > 1 and devices != per_node:
        raise UserError(f"trainer.devices={devices} but torchrun started {per_node} processes per node; "
                        f"set trainer.devices={per_node} or leave it at 1 under torchrun")
    backend = "nccl" if device(accelerator).type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(value: T) -> T:
    """Rank 0's `value` on every rank (any picklable object)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_object(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank (a collective: all ranks must call it).

    `value` may hold tensors (RNG states): all_gather_object cannot unpickle CPU tensors under
    gloo in this torch, so they travel as torch.save bytes, read back with weights_only.
    """
    if not dist.is_initialized():
        return [value]
    buffer = io.BytesIO()
    torch.save(value, buffer)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, buffer.getvalue())
    return [torch.load(io.BytesIO(blob), weights_only=True) for blob in gathered]


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest `value` of all ranks (a collective: all ranks must call it at the same point)."""
    return _reduce_int(value, device, dist.ReduceOp.MAX)


def min_over_ranks(value: int, device: torch.device) -> int:
    """The smallest `value` of all ranks (a collective, like `max_over_ranks`)."""
    return _reduce_int(value, device, dist.ReduceOp.MIN)


def _reduce_int(value: int, device: torch.device, op: dist.ReduceOp.RedOpType) -> int:
    if not dist.is_initialized():
        return value
    box = torch.tensor(value, device=device)
    dist.all_reduce(box, op=op)
    return int(box)


def broadcast_buffers(module: nn.Module) -> None:
    """Gives every rank rank 0's buffers (BatchNorm statistics), so all ranks evaluate one model."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
