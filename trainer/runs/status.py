"""A run's status record, `<run>/status.json`: what `runs` lists without opening a checkpoint.

    {"status": "running", "host": ..., "pid": ..., "started": ISO time, "experiment": ...,
     "overrides": [...], "seconds": training time of the earlier starts, "this_start": ISO time,
     "config": {dotted key: value}}

The job (trainer/commands/train_job.py) writes `running` when it starts and, when it ends, one of
`done`, `failed` (with the one-line `error`), `stopped` (by a signal, with the `signal`) or
`pruned` (an Optuna trial), adding the epoch and step it ended at and the monitored best value.
Every write replaces the file atomically, so a reader never sees half a record. A `running`
record whose process is gone from this host is a crashed run (`observed`). No torch import: the
`runs` command reads thousands of these.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from decltrain.trainer.errors import UserError
from decltrain.trainer.runs import layout

RUNNING, DONE, FAILED, STOPPED, PRUNED = "running", "done", "failed", "stopped", "pruned"
CRASHED = "crashed"  # never written: a `running` record whose process is gone (see `observed`)
ENDED = (DONE, FAILED, STOPPED, PRUNED)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def started(run_dir: Path, experiment: str, overrides: list[str], config: dict[str, Any]) -> None:
    """Records that this process trains in `run_dir` now, with what (`config`: the composed config as
    `.hydra/config.yaml` holds it, flattened, which `runs` filters and compares by without parsing
    YAML); a resumed run keeps its first start and time spent."""
    earlier = read(run_dir) or {}
    moment = now()
    write(run_dir, {"status": RUNNING, "host": socket.gethostname(), "pid": os.getpid(),
                    "started": earlier.get("started", moment), "this_start": moment,
                    "seconds": earlier.get("seconds", 0.0), "experiment": experiment, "overrides": overrides,
                    "config": config})


def ended(run_dir: Path, status: str, **details: Any) -> None:
    """Records how this start ended (`status` one of ENDED) with `details` (epoch, step, best, error...)."""
    record = read(run_dir) or {}
    moment = now()
    this_start = record.get("this_start")
    spent = (_parse(moment) - _parse(this_start)).total_seconds() if this_start else 0.0
    write(run_dir, {**record, **details, "status": status, "ended": moment,
                    "seconds": float(record.get("seconds", 0.0)) + spent})


def read(run_dir: Path) -> dict[str, Any] | None:
    """The record, None when there is none or it cannot be read (a run of an earlier version)."""
    try:
        record = json.loads((Path(run_dir) / layout.STATUS).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write(run_dir: Path, record: dict[str, Any]) -> None:
    """Replaces the record atomically; a failed write raises a UserError naming the file and the cause."""
    path = Path(run_dir) / layout.STATUS
    tmp_name = path.with_name(f".{layout.STATUS}.{os.getpid()}.tmp")
    try:
        tmp_name.write_text(json.dumps(record, indent=1, default=str) + "\n")
        os.replace(tmp_name, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp_name.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {err.strerror or err}; free disk space or choose a writable "
                        "hydra.run.dir") from err


def observed(record: dict[str, Any]) -> str:
    """The record's status, except `crashed` for a `running` record whose process on this host is gone.

    A run on another host cannot be checked from here and stays `running`.
    """
    status = str(record.get("status", ""))
    if status != RUNNING or record.get("host") != socket.gethostname():
        return status
    return status if _alive(int(record.get("pid", 0))) else CRASHED


def duration_s(record: dict[str, Any]) -> float:
    """Training time over all starts; a running start counts until now."""
    seconds = float(record.get("seconds", 0.0))
    if record.get("status") == RUNNING and record.get("this_start"):
        seconds += (datetime.now(timezone.utc) - _parse(record["this_start"])).total_seconds()
    return seconds


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment)
