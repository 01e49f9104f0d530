"""Where training continues: the one value a checkpoint keeps of the loop's progress."""
from __future__ import annotations

from typing import Any, NamedTuple


class Position(NamedTuple):
    """Epoch `epoch` (0-based), after its first `batch` batches, with `step` optimizer steps done.

    It moves at optimizer-step boundaries only (a checkpoint never holds half an accumulation
    group), and to the next epoch only once the epoch's end (validation, the per-epoch
    scheduler) ran.
    """
    epoch: int = 0
    batch: int = 0
    step: int = 0

    def state_dict(self) -> dict[str, int]:
        """The checkpoint's "progress" entry."""
        return {"epoch": self.epoch, "batch_idx": self.batch, "global_step": self.step}

    @classmethod
    def from_state(cls, progress: dict[str, Any]) -> Position:
        return cls(progress["epoch"], progress["batch_idx"], progress["global_step"])
