"""Writes the sharded checkpoints of `trainer.strategy=fsdp` (layout: trainer/engine/sharded_checkpoint.py),
one at a time, and with `trainer.fsdp.async_save` in the background while training continues."""
from __future__ import annotations

import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict

from decltrain.trainer.engine import checkpoint, distributed
from decltrain.trainer.engine.sharded_checkpoint import FOLDER, KEY


class _Save(NamedTuple):
    written: Any  # what dcp.async_save returned (a Future) while the shards are written in the background
    hidden: Path  # the folder being written
    path: Path  # the checkpoint file that commits it
    state: dict[str, Any] | None  # the file's content (global zero only)


class ShardWriter:
    """With `asynchronous`, `save` returns once the shards are staged (copied off the parameters) and DCP
    writes them in a background thread; the file is committed when they are complete: at the next
    save, when a callback needs the file, and at the end of fit (`wait`)."""

    def __init__(self, asynchronous: bool) -> None:
        """A collective with `asynchronous` under torch.distributed (all ranks make their writer)."""
        self.asynchronous = asynchronous
        self._pending: _Save | None = None
        # The background thread's collectives (DCP's gather of what each rank wrote) get a process group of
        # their own, so they never interleave with training's on the default one (as torchtitan does).
        # Every rank is a member, so new_group gives a group (not its non-member marker).
        self._group = cast(dist.ProcessGroup, dist.new_group(backend="gloo")) \
            if asynchronous and dist.is_initialized() else None

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, path: Path, step: int,
             state: dict[str, Any] | None) -> None:
        """Every rank's shards into a new folder beside `path`, then (global zero, which passes `state`)
        the file `path` holding `state` and the folder's name. A collective."""
        self.wait()
        name = distributed.broadcast_object(f"step={step}-{uuid.uuid4().hex[:8]}")
        hidden = path.parent / FOLDER / f".{name}"
        model_state, optimizer_state = get_state_dict(model, optimizer)
        shards = {"model": model_state, "optimizer": optimizer_state}
        written = dcp.async_save(shards, checkpoint_id=hidden, process_group=self._group) if self.asynchronous \
            else dcp.save(shards, checkpoint_id=hidden)
        self._pending = _Save(written, hidden, path, state)
        if not self.asynchronous:
            self.wait()

    def wait(self) -> None:
        """Finishes the save in flight, if any: its shards complete, then (global zero) its file committed.

        DCP's save ends on the global-zero rank only after every rank's shards are written and it wrote
        the folder's metadata, so no other rank need be waited for here.
        """
        if self._pending is None:
            return
        written, hidden, path, state = self._pending
        self._pending = None
        upload = getattr(written, "upload_completion", written)  # DCP's AsyncSaveResponse, or a Future
        if isinstance(upload, Future):
            upload.result()
        if state is None:
            return
        folder = hidden.with_name(hidden.name[1:])
        hidden.rename(folder)
        checkpoint.fsync_dir(folder.parent)
        checkpoint.save_atomic({**state, KEY: f"{FOLDER}/{folder.name}"}, path)
        checkpoint.remove_unreferenced_shards(path.parent)
