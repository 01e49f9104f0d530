"""SIGTERM, SIGINT and submitit's early signal (USR2) as a request to stop at the next step.

Imports no torch: the `train` console script and trainer/runs/requeue.py use `early_signal`
before (or without) loading it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator

from decltrain.trainer.errors import Preempted

log = logging.getLogger("decltrain")


def early_signal() -> signal.Signals:
    """The signal submitit asks SLURM to send before the time limit (`--signal=USR2@signal_delay_s`)."""
    return signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"]


class StopSignals:
    """While `installed`, a stop signal only sets `received`; a second SIGINT aborts at once.

    The handlers installed before (submitit's, in a SLURM job) are back in place afterwards:
    trainer/runs/requeue.py hands the stop on to them. `agree` is None in one process; under DDP
    it returns the largest signal number over all ranks (0 for none): a collective.
    """

    def __init__(self, agree: Callable[[int], int] | None) -> None:
        self.received: int | None = None
        self.agree = agree

    def raise_if_requested(self, agree_now: bool) -> None:
        """Raises Preempted when a stop was requested; called at optimizer-step boundaries.

        Under DDP every rank must leave at the same step, or the one that goes on waits on a
        collective the others never join: the ranks agree (one small all-reduce) only where
        `agree_now` (the loop: on logging steps), so signals cost no extra sync on other steps.
        """
        signum = self.received
        if self.agree is not None:
            if not agree_now:
                return
            signum = self.agree(signum or 0) or None
        if signum is not None:
            raise Preempted(signum)

    def _request_stop(self, signum: int, frame: object) -> None:
        if self.received is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.received = signum
        log.warning("%s received: stopping after the current step (Ctrl-C again to abort at once)",
                    signal.Signals(signum).name)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        stop_signals = (signal.SIGTERM, signal.SIGINT, early_signal())
        previous = {signum: signal.getsignal(signum) for signum in stop_signals}
        for signum in previous:
            signal.signal(signum, self._request_stop)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
