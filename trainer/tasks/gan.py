"""A generative adversarial network: a generator of images from noise against a discriminator.

The model has a `generator` (noise (batch, `latent_size`) -> images) and a `discriminator`
(images -> one logit each: real or generated), as models/dcgan.py has, and its forward is the
generator's (what `export-model` exports); each has its optimizer
(`optimizer.generator`, `optimizer.discriminator`). Every step the discriminator steps first, on
real images against generated ones; then the generator, every `generator_every` steps, with the
non-saturating loss against the discriminator as its step left it (the DCGAN recipe).

Evaluation uses noise of its own (seeded, the same at every evaluation), never the training
RNG. It reports the discriminator's accuracy on real validation images against as many
generated ones (`d_acc`), both losses (`d_loss`, `g_loss`), and `mean_image_gap`: the mean
absolute difference, per pixel, between the mean real image and the mean generated image. A
generator that leaves out digits or draws strokes in the wrong places has a large gap;
unlike the losses it does not depend on the discriminator of the moment, so it stays comparable
across evaluations, and checkpoints monitor it (lower is better). Each evaluation also shows a
grid of images generated from fixed noise (`val/samples`), the same noise every time.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchvision.utils import make_grid

from decltrain.trainer.errors import UserError
from decltrain.trainer.tasks.kept_images import to_uint8
from decltrain.trainer.tasks.supervised import scalars

DISCRIMINATOR, GENERATOR = "discriminator", "generator"


class GAN:
    def __init__(self, latent_size: int, generator_every: int = 1, shown: int = 64, seed: int = 0) -> None:
        if generator_every < 1:
            raise UserError(f"task.generator_every={generator_every} must be at least 1 (1: every step)")
        self.latent_size = latent_size
        self.generator_every = generator_every
        self.shown = shown
        self.seed = seed
        self._noise: torch.Generator | None = None  # this evaluation's noise, seeded when it starts
        self.grid: torch.Tensor | None = None  # this evaluation's images from fixed noise

    # ---------------------------------------------------------------------- training
    def optimizer_parameters(self, model: nn.Module) -> dict[str, Iterable[nn.Parameter]]:
        return {DISCRIMINATOR: _discriminator(model).parameters(), GENERATOR: _generator(model).parameters()}

    def optimizers_at(self, step: int) -> list[str]:
        return [DISCRIMINATOR, GENERATOR] if step % self.generator_every == 0 else [DISCRIMINATOR]

    def optimizer_loss(self, model: nn.Module, batch: Any, name: str) -> torch.Tensor | dict[str, torch.Tensor]:
        real = batch[0]
        noise = torch.randn(len(real), self.latent_size, device=real.device)
        return self._discriminator_loss(model, real, noise) if name == DISCRIMINATOR else \
            self._generator_loss(model, noise)

    def loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Both networks' losses on one batch (training steps each with `optimizer_loss` instead)."""
        real = batch[0]
        noise = torch.randn(len(real), self.latent_size, device=real.device)
        discriminator = self._discriminator_loss(model, real, noise)
        return {DISCRIMINATOR: discriminator["real"] + discriminator["fake"],
                GENERATOR: self._generator_loss(model, noise)}

    @staticmethod
    def _discriminator_loss(model: nn.Module, real: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """Real images labelled real, generated ones labelled generated (the generator takes no gradient)."""
        with torch.no_grad():
            fake = _generator(model)(noise)
        return {"real": _bce(_discriminator(model)(real), True), "fake": _bce(_discriminator(model)(fake), False)}

    @staticmethod
    def _generator_loss(model: nn.Module, noise: torch.Tensor) -> torch.Tensor:
        """The non-saturating loss: generated images labelled real."""
        return _bce(_discriminator(model)(_generator(model)(noise)), True)

    # -------------------------------------------------------------------- evaluation
    def metrics(self, split: str) -> MetricCollection:
        self._noise = torch.Generator().manual_seed(self.seed + 1)
        self.grid = None
        return MetricCollection({"d_acc": MeanMetric(), "d_loss": MeanMetric(), "g_loss": MeanMetric(),
                                 "mean_image_gap": MeanImageGap()}, compute_groups=False)

    def update(self, metrics: MetricCollection, model: nn.Module, batch: Any) -> None:
        real = batch[0]
        if self._noise is None:
            raise RuntimeError("update before metrics: an evaluation starts with metrics()")
        noise = torch.randn(len(real), self.latent_size, generator=self._noise).to(real.device)
        fake = _generator(model)(noise)
        real_logits, fake_logits = _discriminator(model)(real).float(), _discriminator(model)(fake).float()
        correct = torch.cat([real_logits > 0, fake_logits < 0]).float()
        metrics["d_acc"].update(correct)
        metrics["d_loss"].update(_bce(real_logits, True) + _bce(fake_logits, False), weight=len(real))
        metrics["g_loss"].update(_bce(fake_logits, True), weight=len(real))
        metrics["mean_image_gap"].update(real.float(), fake.float())
        if self.grid is None:
            self.grid = self.samples(model, self.shown, self.seed)

    def summarize(self, computed: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        return scalars(computed), ({} if self.grid is None else {"samples": self.grid})

    # ------------------------------------------------------------- predict, export
    def samples(self, model: nn.Module, count: int, seed: int) -> torch.Tensor:
        """A grid of `count` generated images (8 a row) from the noise of `seed`, as uint8 (C, H, W)."""
        device = next(model.parameters()).device
        noise = torch.randn(count, self.latent_size, generator=torch.Generator().manual_seed(seed)).to(device)
        images = _generator(model)(noise).float().cpu()
        return to_uint8(make_grid(images, nrow=8, normalize=True, value_range=(-1, 1)))  # the generator's tanh range

    def model_inputs(self, batch: Any) -> torch.Tensor:
        """The generator's input, one per image of the batch: noise, here zeros (what export traces with)."""
        return torch.zeros(len(batch[0]), self.latent_size, device=batch[0].device)

    def predict(self, model: nn.Module, inputs: torch.Tensor) -> list[dict[str, Any]]:
        raise UserError("task=gan makes images from noise rather than predicting anything of inputs: use "
                        "predict run=<run folder> num_samples=64")

    def output_mismatch(self, model: nn.Module, batch: Any) -> str | None:
        parts = [name for name in (GENERATOR, DISCRIMINATOR) if not hasattr(model, name)]
        if parts:
            return f"has no {', '.join(parts)}; task=gan needs a generator and a discriminator"
        real = batch[0]
        fake = model(self.model_inputs(batch))
        if fake.shape != real.shape:
            return f"generates images of shape {tuple(fake.shape)} for real ones of shape {tuple(real.shape)}"
        logits = _discriminator(model)(real)
        if logits.shape != (len(real),):
            return f"discriminates {len(real)} images into shape {tuple(logits.shape)}, needs ({len(real)},)"
        return None


def _generator(model: nn.Module) -> nn.Module:
    return cast(nn.Module, model.generator)


def _discriminator(model: nn.Module) -> nn.Module:
    return cast(nn.Module, model.discriminator)


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Binary cross-entropy of logits against the label every image has: real (1) or generated (0)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


class MeanImageGap(Metric):
    """Mean absolute difference, per pixel, between the mean real and the mean generated image."""

    real_sum: torch.Tensor
    fake_sum: torch.Tensor
    count: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("real_sum", default=torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("fake_sum", default=torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        self.real_sum = self.real_sum + real.sum(0)
        self.fake_sum = self.fake_sum + fake.sum(0)
        self.count = self.count + len(real)

    def compute(self) -> torch.Tensor:
        return ((self.real_sum - self.fake_sum) / self.count).abs().mean()
