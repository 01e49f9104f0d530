"""Checkpoint files: written atomically, read with `weights_only=True`, errors that name the file.

A checkpoint is one dict of plain tensors and containers:
  format_version, model (state_dict with plain parameter names), optimizer, lr_schedule,
  precision (grad scaler), progress (the loop's position: epoch, batch within it; global step),
  callbacks ({name: state}), loggers ({name: state}: e.g. a tracked run's id, the scalars of the
  latest logged step), time_budget (the training time spent), rng (python, numpy, torch, cuda;
  `rng_per_rank` under DDP), config (the resolved config as YAML text, compared on resume by
  trainer/runs/config_drift.py).
  With weight averaging (EMA, SWA), "model" holds the averaged weights, the ones to evaluate
  and deploy, and "training_weights" the raw weights training continues from.
A sharded run's file holds, instead of "model" and "optimizer", "shards": the folder of their
shards beside it (trainer/engine/sharded_checkpoint.py); `load` reads them into one whole state.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from decltrain.trainer.engine import sharded_checkpoint, sharding
from decltrain.trainer.errors import UserError

FORMAT_VERSION = 2
_NEARLY_FULL_BYTES = 1 << 20  # free space left by a write that stopped on a full disk: less than a MiB


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Writes `state` so that `path` always holds either the old or the new complete file.

    Temporary file in the same folder, flush, fsync, `os.replace`, fsync of the folder. On any
    failure (unwritable folder, full disk) the temporary file is removed, the previous file at
    `path` is untouched, and a UserError names the path.
    """
    tmp_name = temporary_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp_name, "xb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except (OSError, RuntimeError) as err:  # torch's zip writer reports a failed write as a RuntimeError
        cause = _cause(err, path.parent)  # before the partial file is removed: a full disk is still full
        _discard(tmp_name)
        raise UserError(f"cannot write checkpoint {path}: {cause}; "
                        "free disk space or choose a writable hydra.run.dir") from err
    except BaseException:
        _discard(tmp_name)
        raise
    fsync_dir(path.parent)


def _cause(error: OSError | RuntimeError, folder: Path) -> str:
    """Why a write failed, in a few words: the OS's reason, else (torch's zip writer names only its own
    position in the file) a full disk when the folder's file system has almost no space left."""
    if isinstance(error, OSError):
        return str(error.strerror or error)
    with contextlib.suppress(OSError):
        if shutil.disk_usage(folder).free < _NEARLY_FULL_BYTES:
            return "no space left on device"
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden name beside `path`: same file system, so `os.replace` is atomic."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def fsync_dir(folder: Path) -> None:
    """Makes a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | os.PathLike, mmap: bool = False, assemble: bool = True) -> dict[str, Any]:
    """Reads a checkpoint with `weights_only=True`: a file from elsewhere cannot run code.

    A sharded checkpoint is `assemble`d: its shards read into whole "model" and "optimizer" states,
    as one process holds them; without, "shards" is the path of its shard folder.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        text = str(err).strip()
        reason = text.splitlines()[0].split(". ")[0] if text else type(err).__name__
        raise UserError(f"checkpoint {path} is truncated or corrupt ({reason}); "
                        "use another checkpoint, e.g. checkpoints/last.ckpt of the run") from err
    if not isinstance(state, dict) or ("model" not in state and sharded_checkpoint.KEY not in state):
        raise UserError(f"checkpoint {path} is not a checkpoint of this toolkit (no 'model' key)")
    if sharded_checkpoint.KEY in state:
        state[sharded_checkpoint.KEY] = folder = path.parent / state[sharded_checkpoint.KEY]
        if assemble:
            state.update(sharded_checkpoint.read(folder))
            del state[sharded_checkpoint.KEY]
    return state


def remove(path: Path) -> None:
    """Removes checkpoint file `path`, and its shard folder when no other file names it."""
    path.unlink(missing_ok=True)
    remove_unreferenced_shards(path.parent)


def remove_unreferenced_shards(folder: Path) -> None:
    """Removes the shard folders beside the checkpoint files of `folder` that none of them names.

    Hidden ones (a save in flight) stay; `remove_unfinished_shards` removes those of a killed run.
    """
    shard_root = folder / sharded_checkpoint.FOLDER
    if not shard_root.is_dir():
        return
    try:
        named = {load(file, mmap=True, assemble=False).get(sharded_checkpoint.KEY) for file in folder.glob("*.ckpt")}
    except UserError:  # a file that cannot be read may name any of them: all stay
        return
    for candidate in shard_root.iterdir():
        if not candidate.name.startswith(".") and candidate not in named:
            shutil.rmtree(candidate, ignore_errors=True)


def remove_unfinished_shards(folder: Path) -> None:
    """Removes the hidden shard folders in `folder`: saves of a process killed while writing them."""
    for stale in (folder / sharded_checkpoint.FOLDER).glob(".*"):
        shutil.rmtree(stale, ignore_errors=True)


def saved_config(path: str | os.PathLike) -> str:
    """The resolved config (YAML) a checkpoint was trained with, "" when it holds none.

    Memory-mapped, so the tensors are not read: a resumed run checks its config before building
    anything, and `Trainer.fit` reads the whole file afterwards.
    """
    return str(load(path, mmap=True, assemble=False).get("config", ""))


def check_format(state: dict[str, Any], source: str) -> None:
    """A full state to resume from must be of this format; weights alone load from any version."""
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(f"checkpoint {source} has format {version}, this version of the toolkit resumes format "
                        f"{FORMAT_VERSION}; start a new run from its weights with trainer.init_from={source}")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under torch.compile and DDP wrappers, so saved names carry no prefix."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = cast(nn.Module, model._orig_mod)
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def training_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a resumed run trains on: the raw ones when "model" holds an average."""
    return state.get("training_weights", state["model"])


def load_weights(model: nn.Module, path: str | os.PathLike,
                 strict: bool = True) -> tuple[list[str], list[str], list[str]]:
    """The `model` weights of checkpoint file `path` into `model` (see `load_model_weights`)."""
    return load_model_weights(model, load(path)["model"], str(path), strict=strict)


def load_model_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str,
                       strict: bool = True) -> tuple[list[str], list[str], list[str]]:
    """Loads weights into `model`, explaining a mismatch instead of torch's wall of text.

    Strict: any missing or unexpected key, or a shape that differs, is an error listing them.
    Not strict (fine-tuning): what fits is loaded; returns the missing, unexpected and
    shape-mismatched (skipped) keys for the caller to report.
    """
    target = unwrap(model)
    own = target.state_dict()
    skipped = [key for key, value in weights.items() if key in own and own[key].shape != value.shape]
    missing = [key for key in own if key not in weights]
    unexpected = [key for key in weights if key not in own]
    if strict and (skipped or missing or unexpected):
        problems = []
        if skipped:
            problems.append("shapes differ: " + "; ".join(
                f"{key}: checkpoint {tuple(weights[key].shape)} vs model {tuple(own[key].shape)}" for key in skipped[:5]))
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected)):
            if keys:
                problems.append(f"{label}: " + ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else ""))
        raise UserError(f"checkpoint {source} does not fit the model {type(target).__name__}: "
                        + " | ".join(problems) + "; check that model=... matches the run that wrote it")
    fitting = {key: value for key, value in weights.items() if key not in skipped}
    if sharding.is_sharded(target):
        sharding.load_full_weights(target, fitting)
    else:
        target.load_state_dict(fitting, strict=False)
    return missing, unexpected, skipped
