"""Numeric precision: fp32, or autocast with bf16 (CPU, CUDA) or fp16 with a GradScaler (CUDA)."""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from decltrain.trainer.errors import UserError

CHOICES = ("32", "16-mixed", "bf16-mixed")


class Precision:
    def __init__(self, precision: str, device: torch.device) -> None:
        precision = str(precision)
        if precision not in CHOICES:
            raise UserError(f"trainer.precision={precision!r} is not valid; use one of {', '.join(CHOICES)}")
        if precision == "16-mixed" and device.type != "cuda":
            raise UserError("trainer.precision=16-mixed needs a CUDA device; on CPU use trainer.precision=bf16-mixed")
        self.name = precision
        self.device = device
        self.dtype = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}[precision]
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler("cuda") if precision == "16-mixed" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Makes the gradients true gradients, so clipping and norm logging see real values."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)  # skips the step when gradients overflowed
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict() if self.scaler else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
