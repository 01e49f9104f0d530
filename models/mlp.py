"""A plain MLP: flatten, then Linear-ReLU-Dropout blocks of configurable widths, then a linear head."""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from decltrain.models.blocks import checkpointed


class MLP(nn.Module):
    def __init__(self, num_classes: int, input_shape: tuple[int, ...], hidden_sizes: Sequence[int] = (512, 256),
                 dropout: float = 0.2, activation_checkpointing: bool = False) -> None:
        super().__init__()
        widths = [math.prod(input_shape), *hidden_sizes]
        blocks: OrderedDict[str, nn.Module] = OrderedDict(
            (f"block{i}", nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU(), nn.Dropout(dropout)))
            for i, (n_in, n_out) in enumerate(zip(widths, widths[1:]))
        )
        self.flatten = nn.Flatten()
        self.blocks = checkpointed(nn.Sequential(blocks), activation_checkpointing)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.flatten(x)))
