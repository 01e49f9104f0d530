"""What a test needs to start its own DDP processes."""
from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from decltrain.trainer.engine import distributed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def on_ranks(function: Callable[..., Any], run_dir: Path, world: int = 2, **kwargs: Any) -> list[Any]:
    """`function(run_dir, devices=world, **kwargs)` in `world` gloo processes (a module-level function,
    so the processes can import it); what each rank returned, in rank order."""
    run_dir.mkdir(parents=True, exist_ok=True)
    mp.spawn(_rank, args=(world, free_port(), function, run_dir, kwargs), nprocs=world, join=True)
    return [torch.load(run_dir / f"result{rank}.pt", weights_only=False) for rank in range(world)]


def _rank(rank: int, world: int, port: int, function: Callable[..., Any], run_dir: Path, kwargs: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    distributed.init("cpu", world)
    try:
        torch.save(function(run_dir, devices=world, **kwargs), run_dir / f"result{rank}.pt")
        # Both ranks done before either tears the group down: gloo aborts a process whose peer left
        # while its threads still talked to it ("terminate called without an active exception").
        distributed.barrier()
    finally:
        distributed.destroy()
