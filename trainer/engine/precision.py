"""Numeric precision: fp32, or autocast with bf16 (CPU, CUDA) or fp16 with a GradScaler (CUDA).

With fp16 the scaler skips every optimizer step whose gradients overflowed and lowers the loss
scale; a task's several optimizers share the one scaler (`update`). Those skips are counted on the device (no host sync per step) and reported on logging
steps: a log line when the count grew, `train/loss_scale` and `train/skipped_steps` in TensorBoard.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

from decltrain.trainer.engine.settings import check_precision
from decltrain.trainer.errors import UserError

log = logging.getLogger("decltrain")


class Precision:
    def __init__(self, precision: str, device: torch.device) -> None:
        precision = check_precision(precision)
        if precision == "16-mixed" and device.type != "cuda":
            raise UserError("trainer.precision=16-mixed needs a CUDA device; on CPU use trainer.precision=bf16-mixed")
        self.name = precision
        self.device = device
        self.dtype = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}[precision]
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler("cuda") if precision == "16-mixed" else None
        self.skipped_steps = torch.zeros((), device=device)  # steps the scaler skipped, so far
        self._reported_skips = 0

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor, inputs: list[torch.Tensor] | None = None) -> None:
        """The (scaled) backward; with `inputs`, gradients reach those tensors only."""
        (self.scaler.scale(loss) if self.scaler else loss).backward(inputs=inputs)

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Makes the gradients true gradients, so clipping and norm logging see real values."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Steps `optimizer` (after `unscale`); the scaler skips the step when gradients overflowed.
        `update` follows once the step's optimizers (one, or each of a task's several) all stepped."""
        if self.scaler:
            # What `unscale_` found, per device (1.0 = an inf/NaN gradient): the scaler's own record,
            # read before `update` clears it; torch has no public accessor for it.
            overflowed = sum(self.scaler._found_inf_per_device(optimizer).values())
            self.scaler.step(optimizer)
            self.skipped_steps += overflowed.to(self.skipped_steps.device)
        else:
            optimizer.step()

    def update(self) -> None:
        """The loss scale for the next step: lowered when a stepped optimizer's gradients overflowed.

        One scaler serves every optimizer, as PyTorch's AMP examples for several optimizers do:
        each optimizer is unscaled and stepped on its own (an overflow skips only that
        optimizer's step), and the scale is updated once per step, after all of them."""
        if self.scaler:
            self.scaler.update()

    def report(self, step: int) -> dict[str, float]:
        """fp16's loss scale and skipped steps, for a logging step; warns when steps were skipped since the last."""
        if not self.scaler:
            return {}
        skipped, scale = int(self.skipped_steps), self.scaler.get_scale()
        if skipped > self._reported_skips:
            log.warning("fp16: %d optimizer step(s) skipped up to step %d because gradients overflowed; loss scale "
                        "now %g (a few while the scale settles are normal; many mean the loss diverges)",
                        skipped - self._reported_skips, step, scale)
            self._reported_skips = skipped
        return {"train/loss_scale": scale, "train/skipped_steps": skipped}

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict() if self.scaler else None, "skipped_steps": int(self.skipped_steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps.fill_(state.get("skipped_steps", 0))
        self._reported_skips = int(self.skipped_steps)
