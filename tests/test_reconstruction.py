"""task=reconstruction: the ELBO of a VAE (both terms logged), an autoencoder's reconstruction, image grids; mnist_vae learns."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import TensorDataset

from decltrain.datasets.base import DataSplits, LoaderSettings
from decltrain.models import VAE
from decltrain.models.vae import VAEOutput
from decltrain.trainer.commands import build, export
from decltrain.trainer.errors import UserError
from decltrain.trainer.tasks.reconstruction import Reconstruction
from tests.helpers.commands import run_command, run_train
from tests.helpers.data import mnist_pixels
from tests.helpers.trainers import RecordingLogger, TinyNet, make_trainer

SHAPE = (1, 8, 8)


def image_splits(low: float = 0.0, high: float = 1.0) -> DataSplits:
    """8x8 images of pixels `low` or `high`, each one of four patterns (its label, unused): a code learns them."""
    generator = torch.Generator().manual_seed(0)
    patterns = torch.rand(4, *SHAPE, generator=generator).round()

    def split(count: int) -> TensorDataset:
        labels = torch.randint(0, 4, (count,), generator=generator)
        return TensorDataset(low + (high - low) * patterns[labels], labels)

    return DataSplits(train=split(64), val=split(16), test=split(16), num_classes=1, input_shape=SHAPE,
                      loader=LoaderSettings(batch_size=16), name="blobs")


class FixedVAE(nn.Module):
    """Outputs logits 0 (every pixel p=0.5) and a code Gaussian of mean 1 and variance 1 in each of 3 dimensions."""

    def forward(self, images: torch.Tensor) -> VAEOutput:
        code = torch.ones(len(images), 3)
        return VAEOutput(torch.zeros_like(images), code, torch.zeros_like(code))

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(code), *SHAPE)


class HalfAutoencoder(nn.Module):
    """An autoencoder that gives back half of each input."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images / 2


def test_the_loss_is_the_summed_reconstruction_term_plus_beta_times_the_kl():
    images = torch.ones(4, *SHAPE)
    losses = Reconstruction("bce", beta=2.0).loss(FixedVAE(), (images, torch.zeros(4)))
    assert set(losses) == {"reconstruction", "kl"}
    assert float(losses["reconstruction"]) == pytest.approx(64 * math.log(2), rel=1e-6)  # 64 pixels at p=0.5
    assert float(losses["kl"]) == pytest.approx(2.0 * 3 * 0.5, rel=1e-6)  # KL(N(1, 1) || N(0, 1)) = 0.5 per dimension


def test_an_autoencoder_learns_its_reconstruction_alone_and_reports_no_kl():
    task = Reconstruction("mse")
    images = torch.ones(4, *SHAPE)
    losses = task.loss(HalfAutoencoder(), images)
    assert list(losses) == ["reconstruction"] and float(losses["reconstruction"]) == pytest.approx(64 * 0.25)
    metrics = task.metrics("val")
    task.update(metrics, HalfAutoencoder(), (images, torch.zeros(4)))
    scalars, grids = task.summarize(metrics.compute())
    assert scalars == pytest.approx({"loss_kl": 0.0, "loss_reconstruction": 16.0, "loss": 16.0})
    assert list(grids) == ["reconstructions"]


def test_a_vae_logs_both_terms_and_draws_reconstructions_and_prior_samples_at_each_validation(tmp_path):
    logger = RecordingLogger()
    trainer = make_trainer(tmp_path, splits=image_splits(), model=VAE(SHAPE, code_size=4, hidden_size=32),
                           task=Reconstruction(shown=4), loggers={"record": logger}, log_every_n_steps=1,
                           max_epochs=2, optimizer=lambda params: torch.optim.Adam(params, lr=1e-2))
    trainer.fit()
    logged = logger.logged
    assert logged["train/loss"] == pytest.approx([reconstruction + kl for reconstruction, kl in
                                                  zip(logged["train/loss_reconstruction"], logged["train/loss_kl"])])
    assert logged["val/loss"][-1] < logged["val/loss"][0]
    assert logged["val/loss"][-1] == pytest.approx(logged["val/loss_reconstruction"][-1] + logged["val/loss_kl"][-1])
    assert len(logged["val/reconstructions"]) == len(logged["val/samples"]) == len(logged["val/loss"]) >= 2


def test_the_grid_holds_the_inputs_over_their_reconstructions_and_the_prior_samples_are_fixed():
    task, model = Reconstruction(shown=4), VAE(SHAPE, code_size=4, hidden_size=32).eval()
    images = image_splits().val.tensors[0]
    grids = []
    for _ in range(2):
        metrics = task.metrics("val")
        task.update(metrics, model, images)
        grids.append(task.summarize(metrics.compute())[1])
    assert grids[0]["reconstructions"].shape == (3, 2 * 8 + 3 * 2, 4 * 8 + 5 * 2)  # 2 rows of 4, padding 2
    assert grids[0]["reconstructions"].dtype == torch.uint8
    assert torch.equal(grids[0]["samples"], grids[1]["samples"])


def test_samples_are_a_grid_of_eight_a_row_drawn_from_the_prior_with_the_seed_given():
    task, model = Reconstruction(), VAE(SHAPE, code_size=4, hidden_size=32).eval()
    with torch.no_grad():
        grid, again, other = task.samples(model, 16, 0), task.samples(model, 16, 0), task.samples(model, 16, 1)
    assert grid.dtype == torch.uint8 and grid.shape == (3, 2 * 8 + 3 * 2, 8 * 8 + 9 * 2)
    assert torch.equal(grid, again) and not torch.equal(grid, other)
    with pytest.raises(UserError, match="model HalfAutoencoder cannot draw samples: that takes a VAE"):
        task.samples(HalfAutoencoder(), 16, 0)


def test_predict_gives_each_input_its_reconstruction_as_an_image_and_its_loss():
    task, model = Reconstruction(), VAE(SHAPE, code_size=4, hidden_size=32).eval()
    images = image_splits().val.tensors[0][:3]
    with torch.no_grad():
        rows = task.predict(model, images)
        expected = task.reconstruction_loss(model(images).reconstruction, images)
    assert [row["loss_reconstruction"] for row in rows] == pytest.approx(expected.tolist(), abs=1e-4)
    assert all(isinstance(row["reconstruction"], Image.Image) and row["reconstruction"].size == (8, 8)
               and row["reconstruction"].mode == "L" for row in rows)


@pytest.mark.parametrize(("model", "task", "splits", "expected"), [
    (VAE(SHAPE), Reconstruction("bce"), image_splits(-0.5, 2.0),
     "is given inputs from -0.5 to 2, but task.reconstruction=bce needs them in [0, 1]: set dataset.mean and "
     "dataset.std to 0 and 1 per channel"),
    (TinyNet(3, (64,)), Reconstruction("mse"), image_splits(),
     "model TinyNet does not fit dataset blobs (input shape (1, 8, 8))"),
    (nn.Flatten(), Reconstruction("mse"), image_splits(), "outputs reconstructions of shape (2, 64) for inputs (2, 1, 8, 8)"),
])
def test_a_model_or_data_that_do_not_fit_fail_at_start_in_one_line(model, task, splits, expected):
    with pytest.raises(UserError, match="does not fit") as raised:
        build.check_model_fits(model, task, splits)
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_export_refuses_a_vae_in_one_line_naming_its_several_outputs(tmp_path):
    images = image_splits().val.tensors[0]
    with pytest.raises(UserError, match="export-model exports models whose output is one tensor; VAE returns a VAEOutput"):
        export.verify(VAE(SHAPE), lambda inputs: inputs, images, 1e-4, tmp_path / "model.pt")


def test_an_unknown_reconstruction_loss_names_the_choices():
    with pytest.raises(UserError, match="task.reconstruction='l2' is not valid; use one of bce, mse"):
        Reconstruction("l2")


@pytest.mark.slow
def test_mnist_vae_beats_the_mean_image_logs_both_terms_and_draws_grids(tmp_path, data_dir):
    """`train config=mnist_vae`: the test loss (negative ELBO) is well below the loss of predicting the mean training digit;
    `predict` writes each digit's reconstruction, and `predict num_samples=` a grid of draws from the prior."""
    train, test = mnist_pixels(data_dir, True), mnist_pixels(data_dir, False)
    mean_image = train.mean(0).clamp(1e-6, 1 - 1e-6)
    mean_image_loss = float(-(test * mean_image.log() + (1 - test) * (1 - mean_image).log()).flatten(1).sum(1).mean())
    run_dir = tmp_path / "run"
    # The MNIST subset has 4,000 digits: smaller batches than the config's (made for 60,000) give enough steps.
    result = run_train("config=mnist_vae", "trainer.max_epochs=2", "dataset.batch_size=32", "optimizer.lr=3e-3",
                       f"hydra.run.dir={run_dir}", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["test"]["test/loss"] < 0.75 * mean_image_loss, (report["test"], mean_image_loss)
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for name in ("train/loss_reconstruction", "train/loss_kl"):
        assert [float(row[name]) for row in rows if row[name]], name
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload()
    for name in ("val/reconstructions", "val/samples"):
        assert len({image.step for image in events.Images(name)}) == 3, name  # before training and at each epoch

    digits = tmp_path / "digits"
    digits.mkdir()
    for index in range(2):
        Image.fromarray((test[index] * 255).to(torch.uint8).numpy()).save(digits / f"{index}.png")
    predicted = run_command("predict", f"run={run_dir}", f"inputs={digits}", cwd=tmp_path, data_dir=tmp_path)
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    with (run_dir / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert all(float(row["loss_reconstruction"]) < mean_image_loss for row in rows), rows
    for row in rows:
        with Image.open(row["reconstruction"]) as image:
            assert (image.mode, image.size) == ("L", (28, 28))
    sampled = run_command("predict", f"run={run_dir}", "num_samples=16", cwd=tmp_path, data_dir=tmp_path)
    assert sampled.returncode == 0, sampled.stdout + sampled.stderr
    with Image.open(run_dir / "samples.png") as image:
        assert image.size == (242, 62)  # two rows of 8 digits of 28 pixels, 2 apart
