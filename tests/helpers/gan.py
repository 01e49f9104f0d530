"""A tiny GAN on 8x8 images for tests of several optimizers through the Trainer API."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from decltrain.datasets.base import DataSplits, LoaderSettings
from decltrain.models import DCGAN
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.tasks.gan import GAN

LATENT = 8
LR = 1e-2


def image_splits(n: int = 64, batch_size: int = 16) -> DataSplits:
    """Random 1x8x8 images in [-1, 1] (the generator's range), with unused labels."""
    generator = torch.Generator().manual_seed(0)

    def split(count: int) -> TensorDataset:
        return TensorDataset(torch.rand(count, 1, 8, 8, generator=generator) * 2 - 1, torch.zeros(count, dtype=torch.long))

    return DataSplits(train=split(n), val=split(32), test=split(32), num_classes=1, input_shape=(1, 8, 8),
                      loader=LoaderSettings(batch_size=batch_size), name="random images")


def adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=LR, betas=(0.5, 0.999))


def gan_trainer(run_dir: Path, generator_every: int = 1, task: GAN | None = None, **kwargs: Any) -> Trainer:
    """A seeded DCGAN Trainer, 4 steps an epoch, for `task` (a GAN unless given); `kwargs`:
    TrainerSettings' and the Trainer's keywords."""
    torch.manual_seed(0)
    model = DCGAN((1, 8, 8), latent_size=LATENT, width=4)
    optimizers = {"discriminator": adam(model.discriminator.parameters()), "generator": adam(model.generator.parameters())}
    keywords = {key: kwargs.pop(key) for key in ("callbacks", "loggers", "placement", "lr_schedule") if key in kwargs}
    kwargs.setdefault("max_epochs", 1)
    kwargs.setdefault("accelerator", "cpu")
    return Trainer(TrainerSettings(**kwargs), model, image_splits(),
                   task or GAN(LATENT, generator_every=generator_every),
                   optimizer=optimizers, run_dir=run_dir, **keywords)
