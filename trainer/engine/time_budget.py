"""`trainer.max_time`: a stop when a time budget is spent, like `max_steps` for wall-clock time.

At the budget the loop finishes the current optimizer step and stops there, as any stop inside
an epoch does (`last.ckpt` at that step; a resumed run finishes the epoch); the run tests the
best checkpoint and exits 0. The elapsed training time is part of the checkpoint, so a resumed
run gets what is left of the budget (raise `trainer.max_time` to train longer).
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from decltrain.trainer.errors import UserError

log = logging.getLogger("decltrain")
_DURATION = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}):(\d{1,2})$")


def parse_duration(value: str | float) -> float:
    """`DD:HH:MM:SS` or a number of seconds, as seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        try:
            seconds = float(value) if match is None else (
                ((int(match[1]) * 24 + int(match[2])) * 60 + int(match[3])) * 60 + int(match[4]))
        except ValueError:
            raise UserError(f"trainer.max_time={value!r} is not a duration; write DD:HH:MM:SS "
                            "(00:01:30:00 is 90 minutes) or a number of seconds") from None
    if seconds <= 0:
        raise UserError(f"trainer.max_time={value!r} must be a positive duration")
    return seconds


class TimeBudget:
    """The training time of a run, over every segment of it; `spent` once it reaches `max_time`.

    `agree` is None in one process; under DDP it returns the largest value over all ranks (a
    collective), so every rank stops at the same step: the first clock to run out decides.
    """

    def __init__(self, max_time: str | float | None, agree: Callable[[int], int] | None) -> None:
        self.budget = None if max_time is None else parse_duration(max_time)
        self.agree = agree
        self.elapsed_before = 0.0  # training time of the runs this one resumes
        self._start = time.monotonic()

    def start(self) -> None:
        self._start = time.monotonic()
        if self.budget is not None:
            left = self.budget - self.elapsed_before
            earlier = f" ({left:.0f} s left after {self.elapsed_before:.0f} s of earlier runs)" \
                if self.elapsed_before else ""
            log.info("time budget: %.0f s%s", self.budget, earlier)

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._start

    def spent(self) -> bool:
        """Checked after every optimizer step (a collective under DDP, only with a budget)."""
        if self.budget is None:
            return False
        spent = self.elapsed() >= self.budget
        return bool(self.agree(int(spent))) if self.agree is not None else spent

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.elapsed_before = float(state["elapsed"])
