"""A denoising autoencoder that computes its own loss, as Hugging Face models do (`task=model_loss`).

It takes the whole (images, labels) batch, ignores the labels, corrupts the images with Gaussian
noise while training, and returns `{"loss": ..., "reconstruction": ...}`: the mean squared error
of the reconstruction of the clean images. Nothing outside the model says what it learns.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class DenoisingAutoencoder(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], code_size: int = 32, hidden_size: int = 256,
                 noise: float = 0.5) -> None:
        super().__init__()
        size = math.prod(input_shape)
        self.input_shape = tuple(input_shape)
        self.noise = noise
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(size, hidden_size), nn.ReLU(),
                                     nn.Linear(hidden_size, code_size))
        self.decoder = nn.Sequential(nn.Linear(code_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, size))

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        noisy = images + self.noise * torch.randn_like(images) if self.training else images
        reconstruction = self.decoder(self.encoder(noisy)).view(-1, *self.input_shape)
        return {"loss": F.mse_loss(reconstruction, images), "reconstruction": reconstruction}
