"""Where the loop is: the one record of training progress, and all a checkpoint keeps of it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Progress:
    """Epoch `epoch` (0-based), `batch` of its batches consumed, `step` optimizer steps taken.

    Only the loop changes it (Composer's `Timestamp` plays this part there); the Trainer's
    `epoch`, `batch_idx` and `global_step` are read-only views of it. Callback events run only at
    optimizer-step boundaries, so whenever a callback looks, and may write a checkpoint, the record
    is a state the loop can resume from (never half an accumulation group). `epoch_ended` is set
    while an epoch's end events run (its validation and per-epoch scheduler are done): a checkpoint
    written then resumes at the start of the next epoch, while `epoch` still names the one that ended.
    """
    epoch: int = 0
    batch: int = 0
    step: int = 0
    epoch_ended: bool = False

    def next_epoch(self) -> None:
        """After the end events of an ended epoch: the next one starts at its first batch."""
        if self.epoch_ended:
            self.epoch, self.batch, self.epoch_ended = self.epoch + 1, 0, False

    def state_dict(self) -> dict[str, int]:
        """The checkpoint's "progress" entry: where a resumed run starts."""
        if self.epoch_ended:
            return {"epoch": self.epoch + 1, "batch_idx": 0, "global_step": self.step}
        return {"epoch": self.epoch, "batch_idx": self.batch, "global_step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.batch, self.step = int(state["epoch"]), int(state["batch_idx"]), int(state["global_step"])
        self.epoch_ended = False
