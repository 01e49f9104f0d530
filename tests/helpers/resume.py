"""A run stopped and resumed, and the bit-for-bit comparison of weights after it."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from decltrain.trainer.engine import checkpoint
from decltrain.trainer.engine.callback import Callback
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.errors import Preempted
from tests.helpers.callbacks import SignalAtStep


def stopped_then_resumed(build: Callable[[dict[str, Callback]], Trainer], run_dir: Path, step: int) -> Trainer:
    """A run stopped by SIGTERM after optimizer step `step`, then continued to its end from its last.ckpt.

    `build(extra)` makes the same run in `run_dir` each time, with the callbacks `extra` added.
    """
    interrupted = build({"signal": SignalAtStep(step)})
    with pytest.raises(Preempted):
        interrupted.fit()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.load(last)["progress"]["global_step"] == step
    resumed = build({})
    resumed.fit(last)
    return resumed


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "weights differ after resume"
