"""A small VGG-style CIFAR CNN of three blocks, each two 3x3 conv-BN-ReLU, max-pooling and dropout."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from decltrain.models.blocks import checkpointed


def conv_block(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Dropout(dropout),
    )


class CifarCNN(nn.Module):
    def __init__(self, num_classes: int, input_shape: tuple[int, ...], channels: Sequence[int] = (32, 64, 128),
                 hidden: int = 256, dropout: float = 0.25, dropout_fc: float = 0.5,
                 activation_checkpointing: bool = False) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        widths = [in_channels, *channels]
        blocks: OrderedDict[str, nn.Module] = OrderedDict((f"block{i}", conv_block(c_in, c_out, dropout))
                             for i, (c_in, c_out) in enumerate(zip(widths, widths[1:])))
        self.features = checkpointed(nn.Sequential(blocks), activation_checkpointing)
        # Each block halves height and width (padded convolutions keep them, pooling halves).
        flat = widths[-1] * (height >> len(channels)) * (width >> len(channels))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout_fc),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
