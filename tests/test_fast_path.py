"""The in-memory fast path: same batches, same statistics, same learning, exact resume."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2

from decltrain.callbacks import ModelCheckpoint
from decltrain.trainer.engine.callback import Callback
from decltrain.datasets import csv_table, torchvision_images
from decltrain.datasets.base import DataSplits, LoaderSettings, TransformedSubset
from decltrain.datasets.images import image_pipeline
from decltrain.datasets.in_memory import BatchTransform, InMemory, decode_images
from decltrain.models.mnist_cnn import MnistCNN
from decltrain.trainer.engine import data
from decltrain.trainer.errors import Preempted
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.placement import uses_channels_last
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.tasks.classification import Classification
from tests.helpers.callbacks import SignalAtStep

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
CPU = torch.device("cpu")


def random_images(count: int, channels: int = 3, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, channels, side, side), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_batch_transform_equals_the_per_sample_pipeline_without_augmentation():
    images = random_images(20)
    per_sample = torch.stack([image_pipeline([], MEAN, STD).per_sample()(image) for image in images])
    assert torch.equal(image_pipeline([], MEAN, STD).per_batch()(images), per_sample)


def test_flip_draws_once_per_sample_with_the_configured_probability():
    torch.manual_seed(0)
    images = random_images(4000, channels=1, side=4)
    flipped = BatchTransform([v2.RandomHorizontalFlip(p=0.3)], [0.0], [1.0])(images)
    plain = BatchTransform([], [0.0], [1.0])(images)
    was_flipped = (flipped != plain).flatten(1).any(dim=1)
    assert torch.equal(flipped[was_flipped], plain[was_flipped].flip(-1))
    assert abs(was_flipped.float().mean().item() - 0.3) < 0.03


def test_random_crop_matches_the_per_sample_crop_in_distribution():
    """Padding 4 around a constant image: the crop offset shows as the count of padded rows/columns."""
    torch.manual_seed(0)
    images = torch.full((3000, 1, 8, 8), 255, dtype=torch.uint8)
    crop = v2.RandomCrop(8, padding=4)
    batch = BatchTransform([crop], [0.0], [1.0])(images)
    per_sample = torch.stack([image_pipeline([crop], [0.0], [1.0]).per_sample()(image) for image in images])

    def zero_rows_and_columns(out: torch.Tensor) -> torch.Tensor:
        return torch.stack([(out == 0).all(dim=-1).sum(dim=(1, 2)), (out == 0).all(dim=-2).sum(dim=(1, 2))], 1)

    for counts in (zero_rows_and_columns(batch), zero_rows_and_columns(per_sample)):
        # Offsets are uniform over 0..8: 0 padded lines with probability 1/9, 1..4 each 2/9.
        histogram = torch.bincount(counts.flatten(), minlength=5).float() / counts.numel()
        assert torch.allclose(histogram, torch.tensor([1, 2, 2, 2, 2]) / 9, atol=0.03)
    assert len(torch.unique(zero_rows_and_columns(batch), dim=0)) > 20  # each sample its own offset


def test_augmented_batches_have_the_statistics_of_the_per_sample_pipeline():
    torch.manual_seed(0)
    images = random_images(2000) // 2 + torch.arange(32, dtype=torch.uint8)  # a gradient across columns
    steps = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
    batch = BatchTransform(steps, MEAN, STD)(images)
    per_sample = torch.stack([image_pipeline(steps, MEAN, STD).per_sample()(image) for image in images])
    assert torch.allclose(batch.mean(dim=(0, 1)), per_sample.mean(dim=(0, 1)), atol=0.05)  # per pixel
    assert torch.allclose(batch.std(dim=(0, 2, 3)), per_sample.std(dim=(0, 2, 3)), rtol=0.02)  # per channel


def test_steps_without_a_batched_version_run_per_sample():
    torch.manual_seed(0)
    images = random_images(64)
    out = BatchTransform([v2.RandomAffine(degrees=0, translate=(0.1, 0.1))], MEAN, STD)(images)
    assert out.shape == (64, 3, 32, 32)
    assert out.dtype == torch.float32


def test_device_loader_yields_the_dataloader_batches_in_the_same_order(data_dir: Path):
    splits = {flag: torchvision_images.build("MNIST", str(data_dir), [0.1307], [0.3081], download=False,
                                             in_memory=flag, batch_size=64) for flag in (True, False)}
    assert isinstance(splits[True].train, InMemory) and isinstance(splits[False].train, TransformedSubset)
    fast = data.train_loader(splits[True].train, splits[True].loader, seed=3, device=CPU)
    slow = data.train_loader(splits[False].train, splits[False].loader, seed=3, device=CPU)
    assert isinstance(fast, data.DeviceTensorLoader) and isinstance(slow, DataLoader)
    assert len(fast) == len(slow) == 57
    for loader in (fast, slow):
        loader.start_epoch(2, 5)  # resumed after 5 batches
    pairs = list(zip(fast, slow, strict=True))
    assert len(pairs) == 52
    for (fast_x, fast_y), (slow_x, slow_y) in pairs:
        assert torch.equal(fast_x, slow_x) and torch.equal(fast_y, slow_y)


def test_eval_loader_covers_each_shard_once_and_drop_last_drops_the_rest():
    dataset = InMemory(torch.arange(10).float()[:, None], torch.arange(10))
    settings = LoaderSettings(batch_size=4, drop_last=True)
    shards = [torch.cat([y for _, y in data.eval_loader(dataset, settings, CPU, num_replicas=2, rank=r)])
              for r in (0, 1)]
    assert sorted(torch.cat(shards).tolist()) == list(range(10))  # evaluation never drops samples
    train = data.train_loader(dataset, settings, seed=0, device=CPU)
    assert len(train) == 2 and [len(y) for _, y in train] == [4, 4]


def _mnist_trainer(splits: DataSplits, run_dir: Path) -> Trainer:
    torch.manual_seed(0)
    model = MnistCNN(10, splits.input_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return Trainer(TrainerSettings(accelerator="cpu", max_epochs=1, limit_train_batches=15, limit_val_batches=2),
                   model, splits, Classification(nn.CrossEntropyLoss(), "multiclass", 10), optimizer=optimizer, run_dir=run_dir)


@pytest.mark.slow
def test_fast_path_learns_exactly_what_the_dataloader_path_learns(data_dir: Path, tmp_path: Path):
    results = {}
    for flag in (True, False):
        splits = torchvision_images.build("MNIST", str(data_dir), [0.1307], [0.3081], download=False,
                                          in_memory=flag, batch_size=64, eval_batch_size=200)
        trainer = _mnist_trainer(splits, tmp_path / str(flag))
        trainer.fit()
        results[flag] = (trainer.model.state_dict(), trainer.callback_metrics)
    (fast_weights, fast_metrics), (slow_weights, slow_metrics) = results[True], results[False]
    assert all(torch.equal(fast_weights[k], slow_weights[k]) for k in fast_weights)
    assert fast_metrics == slow_metrics and fast_metrics["val/acc"] > 0.5


def _augmented_trainer(run_dir: Path, extra: dict[str, Callback] | None = None) -> Trainer:
    """Random flips and crops drawn per batch on the fast path, dropout: every random stream in play."""
    images = random_images(96, channels=1, side=8, seed=1)
    labels = (images.float().mean(dim=(1, 2, 3)) > 127.5).long()
    table = InMemory(images, labels)
    augment = BatchTransform([v2.RandomCrop(8, padding=2), v2.RandomHorizontalFlip()], [0.5], [0.25])
    splits = DataSplits(train=table.subset(range(64), augment), val=table.subset(range(64, 96), BatchTransform(
        [], [0.5], [0.25])), test=table.subset(range(64, 96), None), num_classes=2, input_shape=(1, 8, 8),
        loader=LoaderSettings(batch_size=8))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return Trainer(TrainerSettings(accelerator="cpu", max_epochs=3, seed=5), model, splits,
                   Classification(nn.CrossEntropyLoss(), "multiclass", 2), optimizer=optimizer, run_dir=run_dir,
                   callbacks={"ckpt": ModelCheckpoint(monitor="val/loss", mode="min"), **(extra or {})})


def test_mid_epoch_resume_on_the_fast_path_with_augmentation_is_bit_identical(tmp_path: Path):
    reference = _augmented_trainer(tmp_path / "ref")
    reference.fit()
    interrupted = _augmented_trainer(tmp_path / "run", extra={"stop": SignalAtStep(13)})  # epoch 2, batch 5
    with pytest.raises(Preempted):
        interrupted.fit()
    resumed = _augmented_trainer(tmp_path / "run")
    resumed.fit(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert resumed.global_step == reference.global_step == 24
    ref_weights, new_weights = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ref_weights[k], new_weights[k]) for k in ref_weights)


def test_decode_images_reads_pil_datasets_and_keeps_labels():
    pil = [(v2.functional.to_pil_image(image), index % 3) for index, image in enumerate(random_images(5))]
    decoded = decode_images(pil)
    assert decoded.inputs.shape == (5, 3, 32, 32) and decoded.inputs.dtype == torch.uint8
    assert torch.equal(decoded.inputs, random_images(5)) and decoded.targets.tolist() == [0, 1, 2, 0, 1]


@pytest.mark.parametrize("in_memory", [True, False])
def test_in_memory_switch_for_fake_images_and_tables(in_memory: bool):
    images = torchvision_images.build("CIFAR10", "unused", MEAN, STD, fake=True, in_memory=in_memory,
                                      train_transforms=[v2.RandomHorizontalFlip()])
    table = csv_table.build("unused.csv", "target", fake=True, in_memory=in_memory)
    assert isinstance(images.train, InMemory if in_memory else TransformedSubset)
    assert isinstance(table.train, InMemory if in_memory else Subset)
    image, label = images.val[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= int(label) < 10
    assert len(images.train) == 128


def test_in_memory_table_rows_equal_the_tensor_dataset_rows():
    fast = csv_table.build("unused.csv", "target", fake=True, task="multiclass")
    slow = csv_table.build("unused.csv", "target", fake=True, task="multiclass", in_memory=False)
    fast_rows = torch.stack([fast.test[i][0] for i in range(len(fast.test))])
    slow_rows = torch.stack([slow.test[i][0] for i in range(len(slow.test))])
    assert torch.equal(fast_rows, slow_rows)


def test_channels_last_only_for_convolutional_models_on_cuda():
    cnn, mlp = MnistCNN(10, (1, 28, 28)), nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert uses_channels_last(cnn, torch.device("cuda"))
    assert not uses_channels_last(cnn, CPU) and not uses_channels_last(mlp, torch.device("cuda"))


def test_in_memory_mnist_augments_training_only_like_the_dataloader_path(data_dir: Path):
    flip_all = [v2.RandomHorizontalFlip(p=1.0)]
    fast, slow = (torchvision_images.build("MNIST", str(data_dir), [0.1307], [0.3081], download=False,
                                           train_transforms=flip_all, in_memory=flag) for flag in (True, False))
    for split in ("train", "val", "test"):
        fast_x, fast_y = getattr(fast, split)[3]
        slow_x, slow_y = getattr(slow, split)[3]
        assert torch.equal(fast_x, slow_x) and int(fast_y) == slow_y
    assert not torch.equal(fast.train[3][0], fast.eval_transform(v2.functional.to_pil_image(
        fast.train.inputs[3])))  # training images are flipped, the others are not
