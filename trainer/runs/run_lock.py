"""One training process per run folder: a second `train resume=<folder>` refuses while the first runs.

The lock is an `flock` on `<run>/.run.lock`, held for the whole run: the kernel releases it when
the process ends, however it ends, so a crashed run never leaves a stale lock behind. The file
names its holder (host and pid) for the message of the process that is refused.
"""
from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from decltrain.trainer.errors import UserError

LOCK = ".run.lock"


@contextmanager
def held(run_dir: Path) -> Iterator[None]:
    """Holds the run folder's lock in this block; a UserError names the holder when another process has it."""
    path = Path(run_dir) / LOCK
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}; choose a writable hydra.run.dir") from err
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "another process"
            raise UserError(f"run folder {run_dir} is in use by {holder}: a run trains there now; wait for it "
                            "to end (or stop it) before resuming it, or start a new run") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock
