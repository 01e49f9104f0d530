"""The run's log file (`<run folder>/train.log`): a write that fails ends the run with one line.

Python's logging prints a traceback for a handler that cannot write ("--- Logging error ---") and
goes on without the file. Here the first failed write (a full disk, a removed folder) raises a
UserError naming the file and the cause from the logging call, so the run stops as for any other
write of its folder (its checkpoints stay as they were) and `train` exits with 2; the handler
writes nothing more afterwards, so that error line itself reaches the console only.
"""
from __future__ import annotations

import contextlib
import logging
import sys

from decltrain.trainer.errors import UserError


class RunLogFile(logging.FileHandler):
    """Hydra's file handler (configs/hydra/default.yaml names it), failing in one line."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        self.failed = True
        if self.stream is not None:  # its unwritable buffer must not fail again when logging shuts down
            with contextlib.suppress(OSError):
                self.stream.close()
            self.stream = None  # FileHandler's own "closed" state
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise UserError(f"cannot write the log file {self.baseFilename}: {reason}; free disk space or choose a "
                        "writable hydra.run.dir") from None
