"""FSDP against DDP on 2 CPU ranks (gloo): per-rank memory of parameters, gradients and Adam's state,
and the step time, alternated in one run so both see the same machine load.

    python scripts/fsdp_benchmark.py [--width 2048] [--depth 12] [--rounds 5] [--steps 3] [--keep-gathered]

The model is `depth` Linear(width, width) layers (12 x 2048^2: 50.3M parameters), each layer a
shard unit. Memory is counted from the tensors each rank holds after a step (what FSDP divides),
next to the process's resident memory (which also holds the Python runtime, torch and buffers).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel


def model(width: int, depth: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*(nn.Linear(width, width) for _ in range(depth)))


def local_bytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum((t.to_local() if isinstance(t, DTensor) else t).nbytes for t in tensors)


def held(net: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    params = list(net.parameters())
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.ndim > 0]
    return {"parameters_mb": local_bytes(params) / 2**20,
            "gradients_mb": local_bytes([p.grad for p in params if p.grad is not None]) / 2**20,
            "optimizer_mb": local_bytes(state) / 2**20}


def step(net: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor) -> None:
    net(inputs).square().mean().backward()
    optimizer.step()


def worker(rank: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    inputs = torch.randn(args.batch, args.width)
    ddp_net = DistributedDataParallel(model(args.width, args.depth))
    ddp_opt = torch.optim.Adam(ddp_net.parameters())
    fsdp_net = model(args.width, args.depth)
    for layer in fsdp_net:
        fully_shard(layer, reshard_after_forward=args.reshard_after_forward)
    fully_shard(fsdp_net, reshard_after_forward=args.reshard_after_forward)
    fsdp_opt = torch.optim.Adam(fsdp_net.parameters())
    runs = {"ddp": (ddp_net, ddp_opt), "fsdp": (fsdp_net, fsdp_opt)}
    for net, optimizer in runs.values():  # warm-up: optimizer state and buffers exist from here
        step(net, optimizer, inputs)
    times: dict[str, list[float]] = {"ddp": [], "fsdp": []}
    for _ in range(args.rounds):
        for name, (net, optimizer) in runs.items():
            dist.barrier()
            started = time.perf_counter()
            for _ in range(args.steps):
                optimizer.zero_grad(set_to_none=False)
                step(net, optimizer, inputs)
            dist.barrier()
            times[name].append((time.perf_counter() - started) / args.steps)
    report: dict[str, Any] = {name: {**held(net, optimizer), "step_s_median": sorted(times[name])[len(times[name]) // 2]}
              for name, (net, optimizer) in runs.items()}
    report["parameters"] = sum(p.numel() for p in ddp_net.parameters())
    report["peak_rss_mb_both_models"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if rank == 0:
        with open(out, "w") as handle:
            json.dump(report, handle, indent=2)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="fsdp_benchmark.json")
    parser.add_argument("--keep-gathered", dest="reshard_after_forward", action="store_false",
                        help="reshard_after_forward=False: one all-gather per step instead of two, more memory")
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(worker, args=(port, args, args.out), nprocs=2, join=True)
    with open(args.out) as handle:
        report = json.load(handle)
    ddp, fsdp = report["ddp"], report["fsdp"]
    total = {name: sum(r[k] for k in ("parameters_mb", "gradients_mb", "optimizer_mb")) for name, r in (("ddp", ddp), ("fsdp", fsdp))}
    print(json.dumps(report, indent=2))
    print(f"{report['parameters'] / 1e6:.1f}M parameters; per rank, parameters + gradients + Adam state: "
          f"DDP {total['ddp']:.0f} MB, FSDP {total['fsdp']:.0f} MB (ratio {total['fsdp'] / total['ddp']:.2f}); "
          f"median step DDP {ddp['step_s_median']:.3f} s, FSDP {fsdp['step_s_median']:.3f} s "
          f"(ratio {fsdp['step_s_median'] / ddp['step_s_median']:.2f})")


if __name__ == "__main__":
    main()
