"""Activation checkpointing for block-structured models: less memory for very deep nets, for one more forward."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class CheckpointedSequential(nn.Sequential):
    """An `nn.Sequential` that, while training, recomputes each block's activations in backward.

    Memory then grows with one block instead of the whole stack, at the price of a second
    forward pass. The state_dict keys are those of a plain `nn.Sequential`, so checkpoints and
    weight files load whether the switch is on or off.
    """

    def __init__(self, blocks: OrderedDict[str, nn.Module], enabled: bool = True) -> None:
        super().__init__(blocks)
        self.enabled = enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recompute = self.enabled and self.training and torch.is_grad_enabled()
        for block in self:
            # use_reentrant=False is torch's recommended mode; it restores the RNG state so
            # dropout masks are the same in the recomputation.
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return x


def checkpointed(sequential: nn.Sequential, enabled: bool) -> nn.Sequential:
    """`sequential` with the same children (and names) run through CheckpointedSequential."""
    return CheckpointedSequential(OrderedDict(sequential.named_children())) if enabled else sequential
