"""A variational autoencoder of small images (Kingma and Welling's MNIST model): MLP encoder and decoder.

The encoder gives the mean and log-variance of a Gaussian over the code; while training the code is
drawn from it (the reparameterization trick), in eval mode it is the mean, so an evaluation is
deterministic and draws nothing from the run's random numbers. The decoder's outputs are logits of
each pixel (the `reconstruction` task's `bce`) or the pixels themselves (its `mse`). `decode` maps
codes (`code_size` values) drawn from the prior, a standard Gaussian, to new images.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn


class VAEOutput(NamedTuple):
    reconstruction: torch.Tensor  # the inputs' shape
    mean: torch.Tensor            # (batch, code_size)
    log_variance: torch.Tensor    # (batch, code_size)


class VAE(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], code_size: int = 16, hidden_size: int = 400) -> None:
        super().__init__()
        size = math.prod(input_shape)
        self.code_size = code_size
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(size, hidden_size), nn.ReLU(),
                                     nn.Linear(hidden_size, 2 * code_size))
        self.decoder = nn.Sequential(nn.Linear(code_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, size),
                                     nn.Unflatten(1, tuple(input_shape)))

    def forward(self, images: torch.Tensor) -> VAEOutput:
        mean, log_variance = self.encoder(images).chunk(2, dim=-1)
        code = mean + torch.randn_like(mean) * (0.5 * log_variance).exp() if self.training else mean
        return VAEOutput(self.decode(code), mean, log_variance)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Images (or their logits) of codes (batch, code_size)."""
        return self.decoder(code)
