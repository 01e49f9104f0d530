"""Reconstruction: an autoencoder gives its inputs back; a VAE also keeps its codes close to the prior.

Batches are images (or (images, labels) pairs, the labels unused). An autoencoder returns the
reconstruction; a VAE returns (reconstruction, mean, log_variance) of its code's Gaussian and has
`decode(code)` and `code_size`, as models/vae.py has. The loss per sample is the reconstruction term
(`bce`: binary cross-entropy of the output logits against inputs in [0, 1]; `mse`: squared error),
summed over the pixels, plus, for a VAE, `beta` times the KL divergence of the code's Gaussian from
the standard one: the negative ELBO when `beta` is 1. Both terms are logged (`loss_reconstruction`,
`loss_kl`, the latter as optimized: times `beta`; 0 for an autoencoder, which has no code
distribution). Every evaluation also shows its first images over their reconstructions, and, for a
VAE, images decoded from fixed draws of the prior, so the grids compare across epochs; `samples`
draws such a grid for `predict num_samples=`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from decltrain.trainer.engine.checkpoint import unwrap
from decltrain.trainer.errors import UserError
from decltrain.trainer.tasks.kept_images import KeptImages, to_uint8
from decltrain.trainer.tasks.supervised import scalars

RECONSTRUCTION_LOSSES = ("bce", "mse")
SAMPLES_SEED = 0  # the prior draws shown at every evaluation: the same ones each time


class Reconstruction:
    def __init__(self, reconstruction: str = "bce", beta: float = 1.0, shown: int = 8) -> None:
        if reconstruction not in RECONSTRUCTION_LOSSES:
            raise UserError(f"task.reconstruction={reconstruction!r} is not valid; use one of "
                            f"{', '.join(RECONSTRUCTION_LOSSES)}")
        if beta < 0:
            raise UserError(f"task.beta={beta} must be at least 0 (the weight of the KL term)")
        self.reconstruction = reconstruction
        self.beta = beta
        self.shown = shown

    def loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images = images_of(batch)
        rebuilt, code = split_outputs(model(images))
        losses = {"reconstruction": self.reconstruction_loss(rebuilt, images).mean()}
        if code is not None:
            losses["kl"] = self.beta * kl_divergence(*code).mean()
        return losses

    def metrics(self, split: str) -> MetricCollection:
        return MetricCollection({"loss_reconstruction": MeanMetric(), "loss_kl": MeanMetric(), "loss": MeanMetric(),
                                 "inputs": KeptImages(self.shown), "reconstructions": KeptImages(self.shown),
                                 "samples": KeptImages(self.shown)}, compute_groups=False)

    def update(self, metrics: MetricCollection, model: nn.Module, batch: Any) -> None:
        images = images_of(batch)
        rebuilt, code = split_outputs(model(images))
        reconstruction = self.reconstruction_loss(rebuilt, images)
        kl = self.beta * kl_divergence(*code) if code is not None else torch.zeros_like(reconstruction)
        metrics["loss_reconstruction"].update(reconstruction)
        metrics["loss_kl"].update(kl)
        metrics["loss"].update(reconstruction + kl)
        metrics["inputs"].update(images)
        metrics["reconstructions"].update(self.visible(rebuilt))
        if not metrics["samples"].update_called:  # once per evaluation; an autoencoder has no prior to draw from
            metrics["samples"].update(rebuilt[:0] if code is None else self.decoded(model, self.shown, SAMPLES_SEED))

    def summarize(self, computed: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """The losses, a grid of the first inputs (top row) over their reconstructions, and the prior's samples."""
        pairs = torch.cat([computed["inputs"], computed["reconstructions"]])
        images = {"reconstructions": to_uint8(make_grid(pairs, nrow=len(computed["inputs"]), normalize=True))}
        if len(computed["samples"]):
            images["samples"] = to_uint8(make_grid(computed["samples"], normalize=True))
        return scalars(computed), images

    def model_inputs(self, batch: Any) -> torch.Tensor:
        return images_of(batch)

    def predict(self, model: nn.Module, inputs: Any) -> list[dict[str, Any]]:
        """Each input's reconstruction (a PNG beside the CSV) and its reconstruction loss."""
        rebuilt, _ = split_outputs(model(inputs))
        losses = self.reconstruction_loss(rebuilt, inputs)
        shown = self.visible(rebuilt)
        if self.reconstruction == "mse":  # pixels of the dataset's normalized scale: each stretched to its range
            low, high = shown.amin(dim=(1, 2, 3), keepdim=True), shown.amax(dim=(1, 2, 3), keepdim=True)
            shown = (shown - low) / (high - low).clamp_min(1e-6)
        return [{"loss_reconstruction": round(float(loss), 4), "reconstruction": to_pil_image(image.clamp(0, 1).cpu())}
                for loss, image in zip(losses, shown)]

    def output_mismatch(self, model: nn.Module, batch: Any) -> str | None:
        images = images_of(batch)
        if self.reconstruction == "bce" and (images.min() < 0 or images.max() > 1):
            return (f"is given inputs from {float(images.min()):.3g} to {float(images.max()):.3g}, but "
                    "task.reconstruction=bce needs them in [0, 1]: set dataset.mean and dataset.std to 0 and 1 "
                    "per channel (e.g. dataset.mean=[0] dataset.std=[1]), or use task.reconstruction=mse")
        outputs = model(images)
        vae = isinstance(outputs, tuple) and len(outputs) == 3 and all(isinstance(part, torch.Tensor) for part in outputs)
        if not vae and not isinstance(outputs, torch.Tensor):
            return (f"outputs a {type(outputs).__name__}, needs the reconstruction (an autoencoder) or "
                    "(reconstruction, mean, log_variance) (a VAE)")
        rebuilt, code = split_outputs(outputs)
        if rebuilt.shape != images.shape:
            return f"outputs reconstructions of shape {tuple(rebuilt.shape)} for inputs {tuple(images.shape)}"
        if code is not None:
            mean, log_variance = code
            if mean.dim() != 2 or mean.shape != log_variance.shape or len(mean) != len(images):
                return (f"outputs a mean {tuple(mean.shape)} and a log-variance {tuple(log_variance.shape)}, "
                        f"needs both ({len(images)}, code size)")
            if not draws_samples(model):
                return "has no decode(code) method or no code_size, which a VAE needs to draw images from the prior"
        return None

    def reconstruction_loss(self, rebuilt: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Per sample, summed over its pixels (float32 under any autocast)."""
        rebuilt, images = rebuilt.float(), images.float()
        if self.reconstruction == "bce":
            return F.binary_cross_entropy_with_logits(rebuilt, images, reduction="none").flatten(1).sum(1)
        return (rebuilt - images).pow(2).flatten(1).sum(1)

    def visible(self, rebuilt: torch.Tensor) -> torch.Tensor:
        """The model's outputs as images: pixel probabilities for `bce` (the outputs are logits), as they are for `mse`."""
        return rebuilt.float().sigmoid() if self.reconstruction == "bce" else rebuilt.float()

    def samples(self, model: nn.Module, count: int, seed: int) -> torch.Tensor:
        """A uint8 (C, H, W) grid (8 a row) of `count` images a VAE decodes from draws of the prior made with `seed`."""
        return to_uint8(make_grid(self.decoded(model, count, seed).cpu(), normalize=True))

    def decoded(self, model: nn.Module, count: int, seed: int) -> torch.Tensor:
        """The images of `count` codes drawn from the prior, a standard Gaussian, with `seed`."""
        vae = unwrap(model)
        if not draws_samples(vae):
            raise UserError(f"model {type(vae).__name__} cannot draw samples: that takes a VAE, with decode(code) "
                            "and code_size (model=vae)")
        draws = torch.randn(count, int(getattr(vae, "code_size")), generator=torch.Generator().manual_seed(seed))
        decode: Callable[[torch.Tensor], torch.Tensor] = getattr(vae, "decode")
        return self.visible(decode(draws.to(next(vae.parameters()).device)))


def draws_samples(model: nn.Module) -> bool:
    """Whether the model (under any DDP or compile wrapper) decodes codes of a known size, as a VAE does."""
    vae = unwrap(model)
    return callable(getattr(vae, "decode", None)) and isinstance(getattr(vae, "code_size", None), int)


def images_of(batch: Any) -> torch.Tensor:
    """The images of a batch: the batch itself, or the first part of an (images, labels) pair."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def split_outputs(outputs: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """(reconstruction, (mean, log_variance) of a VAE's code, or None for an autoencoder)."""
    if isinstance(outputs, torch.Tensor):
        return outputs, None
    rebuilt, mean, log_variance = outputs
    return rebuilt, (mean, log_variance)


def kl_divergence(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_variance)) || N(0, 1)) per sample, summed over the code."""
    mean, log_variance = mean.float(), log_variance.float()
    return 0.5 * (mean.pow(2) + log_variance.exp() - 1 - log_variance).sum(1)
