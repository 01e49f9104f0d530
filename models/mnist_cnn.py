"""The MNIST network of PyTorch's examples: two 3x3 convolutions (32, 64), max-pooling, a 128-unit layer, dropout."""
from __future__ import annotations

import torch
from torch import nn


class MnistCNN(nn.Module):
    def __init__(self, num_classes: int, input_shape: tuple[int, ...], hidden: int = 128,
                 dropout_conv: float = 0.25, dropout_fc: float = 0.5) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(dropout_conv), nn.Flatten(),
        )
        # Two unpadded 3x3 convolutions take 4 pixels off each side, pooling halves what is left.
        flat = 64 * ((height - 4) // 2) * ((width - 4) // 2)
        self.classifier = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(dropout_fc), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
