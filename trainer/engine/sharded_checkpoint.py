"""Sharded checkpoints of `trainer.strategy=fsdp`: each rank writes its own shard of the weights and the
optimizer state with torch.distributed.checkpoint (DCP), and one ordinary file commits them.

A sharded checkpoint is a file and a folder beside it:
  <name>.ckpt               the ordinary checkpoint file (trainer/engine/checkpoint.py) without "model" and
                            "optimizer": progress, callbacks, loggers, RNG per rank, schedule, config; its
                            "shards" names the folder below, relative to the file's own folder
  shards/step=S-<id>/       DCP's folder: `.metadata` and one `__<rank>_0.distcp` per rank
Every rank writes into a hidden folder (`shards/.step=S-<id>`), which is renamed once all shards and
DCP's metadata are complete; only then is the file written, atomically (trainer/engine/shard_writer.py).
A run killed during a save so leaves the previous file and the folder it names untouched. A folder
no checkpoint file names any more (the previous last.ckpt's) is removed (checkpoint.remove_unreferenced_shards).
Hard links (best.ckpt and the top-k file it names) share one folder.

Keys are DCP's: the weights by parameter name, the optimizer state by parameter name too (as
`get_optimizer_state_dict` gives it), so the folder loads on any number of ranks, each reading
only what its shards need (DCP reshards), and in one process (`read`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_state_dict, set_model_state_dict,
                                                     set_state_dict)
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

from decltrain.trainer.engine import sharding
from decltrain.trainer.errors import UserError

KEY = "shards"  # the checkpoint file's key that names its folder
FOLDER = "shards"  # beside the checkpoint files: one folder per save


def load(model: nn.Module, optimizer: torch.optim.Optimizer | None, folder: Path) -> None:
    """The weights (and the optimizer state) of shard folder `folder` into the sharded `model`: each rank
    reads what its own shards hold, whatever the number of ranks that wrote it. A collective."""
    check_complete(folder)
    if optimizer is None:
        model_state = get_model_state_dict(model)
        dcp.load({"model": model_state}, checkpoint_id=folder)
        set_model_state_dict(model, model_state)
        return
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.load({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=folder)  # in place
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state)


def read(folder: Path) -> dict[str, Any]:
    """The whole weights and optimizer state of `folder` in one process, without a process group:
    "model" by parameter name, "optimizer" keyed by position as `optimizer.state_dict()` keys it."""
    check_complete(folder)
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message="torch.distributed is unavailable or uninitialized")
        whole = _load_state_dict_from_keys(checkpoint_id=folder)
    return {"model": whole["model"], "optimizer": sharding.keyed_by_position(whole["optimizer"])}


def check_complete(folder: Path) -> None:
    if not (folder / ".metadata").is_file():
        raise UserError(f"shard folder {folder} of a sharded checkpoint is missing or incomplete (no .metadata); "
                        "copy the checkpoint file together with its shards/ folder, or use another checkpoint")
