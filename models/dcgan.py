"""A small DCGAN (Radford et al., 2016): a generator of images from noise and a discriminator that
tells real images from generated ones, for images whose sides are multiples of 4 (MNIST's 28).

The two networks are trained by optimizers of their own (`task=gan`); the module's `forward` is
the generator's, so `export-model` exports what makes images.
"""
from __future__ import annotations

import torch
from torch import nn


class DCGAN(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], latent_size: int = 64, width: int = 64) -> None:
        super().__init__()
        channels, height, width_px = input_shape
        if height % 4 or width_px % 4:
            raise ValueError(f"DCGAN makes images whose sides are multiples of 4, not {height}x{width_px}")
        self.latent_size = latent_size
        small = (height // 4, width_px // 4)  # two stride-2 layers double it twice
        self.generator = nn.Sequential(
            nn.Linear(latent_size, 2 * width * small[0] * small[1], bias=False),
            nn.Unflatten(1, (2 * width, *small)), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1), nn.Tanh())
        self.discriminator = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * small[0] * small[1], 1), nn.Flatten(0))
        self.apply(_dcgan_init)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        """Images (batch, channels, height, width) in [-1, 1] from noise (batch, latent_size)."""
        return self.generator(noise)


def _dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation: weights from N(0, 0.02), BatchNorm scales from N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
