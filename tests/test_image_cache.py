"""The image-folder cache: PIL's evaluation pixels, rebuilt on change, unreadable files skipped, exact resume."""
from __future__ import annotations

import logging
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from decltrain.callbacks import ModelCheckpoint
from decltrain.trainer.engine.callback import Callback
from decltrain.datasets import image_folder
from decltrain.datasets.base import DataSplits
from decltrain.datasets.image_cache import CachedImages
from decltrain.trainer.engine import data
from decltrain.trainer.engine.data import DeviceTensorLoader, WorkerBatchLoader
from decltrain.trainer.errors import Preempted
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.tasks.classification import Classification
from tests.helpers.callbacks import SignalAtStep
from tests.helpers.commands import run_train

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIZE = 56
# The tolerance docs/own-images.md documents, in uint8 levels of the evaluation pixels (before Normalize).
MEAN_TOLERANCE, MAX_TOLERANCE = 2, 16


def write_images(root: Path, count: int = 30, seed: int = 0) -> None:
    """Smooth JPEGs of two shapes (landscape and portrait) in three class folders."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        folder = root / "train" / f"class_{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        height, width = (64, 88) if index % 2 else (80, 64)
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((width, height), Image.BICUBIC).save(folder / f"{index:03d}.jpg", quality=95)


def build(root: Path, cache_dir: Path, cache: bool = True, **settings) -> DataSplits:
    transforms = {"train_transforms": [v2.RandomResizedCrop(SIZE, scale=(0.6, 1.0), antialias=True),
                                       v2.RandomHorizontalFlip()],
                  "eval_transforms": [v2.Resize(SIZE, antialias=True), v2.CenterCrop(SIZE)]}
    return image_folder.build(str(root), MEAN, STD, image_size=SIZE, cache=cache, cache_dir=str(cache_dir),
                              batch_size=8, **{**transforms, **settings})


def levels(normalized: torch.Tensor) -> torch.Tensor:
    """Normalized images back to uint8 levels (0..255, as floats)."""
    return (normalized * torch.tensor(STD).view(-1, 1, 1) + torch.tensor(MEAN).view(-1, 1, 1)) * 255


def test_cached_evaluation_pixels_match_the_pil_path_within_the_documented_tolerance(tmp_path: Path):
    write_images(tmp_path / "images")
    cached = build(tmp_path / "images", tmp_path / "cache")
    pil = build(tmp_path / "images", tmp_path / "cache", cache=False)
    assert isinstance(cached.val, CachedImages) and not isinstance(pil.val, CachedImages)
    assert len(cached.val) == len(pil.val) == 6
    fast, _ = cached.val.batch(torch.arange(len(cached.val)))
    slow = torch.stack([pil.val[i][0] for i in range(len(pil.val))])
    difference = (levels(fast) - levels(slow)).abs()
    assert fast.shape == slow.shape == (6, 3, SIZE, SIZE)
    assert difference.mean() < MEAN_TOLERANCE and difference.max() < MAX_TOLERANCE
    assert cached.val.targets.tolist() == [pil.val[i][1] for i in range(len(pil.val))]


def test_cache_size_of_the_evaluation_size_gives_the_pil_pixels_exactly(tmp_path: Path):
    write_images(tmp_path / "images")
    cached = build(tmp_path / "images", tmp_path / "cache", cache_size=SIZE)
    pil = build(tmp_path / "images", tmp_path / "cache", cache=False)
    fast, _ = cached.val.batch(torch.arange(len(cached.val)))
    assert torch.equal(fast, torch.stack([pil.val[i][0] for i in range(len(pil.val))]))


def test_a_changed_file_rebuilds_the_cache_and_removes_the_stale_one(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # dataset.root relative to the working directory, as users write it
    write_images(tmp_path / "images")
    cache_dir = tmp_path / "cache"
    first = build(Path("images"), cache_dir, val_fraction=0.5)
    arrays = sorted(cache_dir.glob("*.npy"))
    assert len(arrays) == 1
    again = build(Path("images"), cache_dir, val_fraction=0.5)
    assert sorted(cache_dir.glob("*.npy")) == arrays  # unchanged folder: the same cache, not rebuilt
    assert torch.equal(again.val.batch(torch.arange(3))[0], first.val.batch(torch.arange(3))[0])
    changed = tmp_path / "images" / "train" / "class_0" / "000.jpg"
    Image.new("RGB", (64, 80), (255, 0, 0)).save(changed)
    rebuilt = build(Path("images"), cache_dir, val_fraction=0.5)
    new_arrays = sorted(cache_dir.glob("*.npy"))
    assert len(new_arrays) == 1 and new_arrays != arrays
    stored = np.load(new_arrays[0], mmap_mode="r")
    assert (stored[0, ..., 0] == 254).mean() > 0.9 and (stored[0, ..., 1] <= 1).mean() > 0.9  # the red image, re-decoded
    assert len(rebuilt.train) + len(rebuilt.val) == 30


def test_an_unreadable_image_is_named_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    write_images(tmp_path / "images")
    broken = tmp_path / "images" / "train" / "class_1" / "broken.jpg"
    broken.write_bytes(b"not an image")
    for _ in range(2):  # the first run builds the cache, the second reads it: both warn
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="decltrain"):
            splits = build(tmp_path / "images", tmp_path / "cache")
        assert len(splits.train) + len(splits.val) == 30
        assert f"skipping 1 unreadable image(s) of {(tmp_path / 'images' / 'train').resolve()}" in caplog.text
        assert str(broken) in caplog.text and "UnidentifiedImageError" in caplog.text


def cached_trainer(root: Path, cache_dir: Path, run_dir: Path, extra: dict[str, Callback] | None = None,
                   workers: int = 0) -> Trainer:
    """Random resized crops and flips drawn per batch from the cache, dropout: every random stream in play."""
    splits = build(root, cache_dir, num_workers=workers, persistent_workers=True)
    assert isinstance(splits.train, CachedImages)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return Trainer(TrainerSettings(accelerator="cpu", max_epochs=3, seed=5), model, splits,
                   Classification(nn.CrossEntropyLoss(), "multiclass", 3), optimizer=optimizer, run_dir=run_dir,
                   callbacks={"ckpt": ModelCheckpoint(monitor="val/loss", mode="min"), **(extra or {})})


@pytest.mark.parametrize("workers", [0, 2])  # augmented in this process (global RNG), or in workers (seeded per batch)
def test_mid_epoch_resume_on_the_cache_is_bit_identical(tmp_path: Path, workers: int):
    write_images(tmp_path / "images")
    args = (tmp_path / "images", tmp_path / "cache")
    reference = cached_trainer(*args, tmp_path / "ref", workers=workers)
    assert isinstance(reference.train_loader, WorkerBatchLoader if workers else DeviceTensorLoader)
    reference.fit()
    interrupted = cached_trainer(*args, tmp_path / "run", extra={"stop": SignalAtStep(4)}, workers=workers)
    with pytest.raises(Preempted):  # epoch 2, batch 1
        interrupted.fit()
    resumed = cached_trainer(*args, tmp_path / "run", workers=workers)
    resumed.fit(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert resumed.global_step == reference.global_step == 9
    ref_weights, new_weights = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ref_weights[k], new_weights[k]) for k in ref_weights)


def test_workers_hand_over_the_batches_this_process_would_make(tmp_path: Path):
    """Evaluation has no randomness: the workers' uint8 batches, finished here, are the in-process batches."""
    write_images(tmp_path / "images")
    splits = build(tmp_path / "images", tmp_path / "cache", num_workers=2)
    cpu = torch.device("cpu")
    in_workers = data.eval_loader(splits.val, splits.loader, cpu)
    in_process = data.eval_loader(splits.val, replace(splits.loader, num_workers=0), cpu)
    assert isinstance(in_workers, WorkerBatchLoader) and isinstance(in_process, DeviceTensorLoader)
    for (fast, labels), (reference, reference_labels) in zip(in_workers, in_process, strict=True):
        assert fast.dtype == torch.float32 and torch.equal(fast, reference) and torch.equal(labels, reference_labels)


def test_a_worker_started_by_spawn_receives_the_file_name_not_the_pixels(tmp_path: Path):
    write_images(tmp_path / "images")
    val = build(tmp_path / "images", tmp_path / "cache").val  # evaluation transforms: no random draws
    assert isinstance(val, CachedImages)
    expected, _ = val.batch(torch.arange(4))
    sent = pickle.dumps(val)
    assert len(sent) < 4096 < val.path.stat().st_size
    received, _ = pickle.loads(sent).batch(torch.arange(4))
    assert torch.equal(received, expected)


@pytest.mark.slow
def test_two_ddp_ranks_share_one_cache(tmp_path: Path):
    """`train` as a user runs it: the ranks take turns on the cache's lock, one builds it, both read it."""
    write_images(tmp_path / "images")
    cache_home = tmp_path / "xdg"
    result = run_train("config=imagefolder_resnet18", f"dataset.root={tmp_path / 'images'}", "dataset.image_size=32",
                       "callbacks.backbone_unfreeze=null", "trainer.devices=2", "trainer.max_epochs=1", cwd=tmp_path,
                       env={"XDG_CACHE_HOME": str(cache_home)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(list((cache_home / "decltrain" / "images").glob("train-*-37-*.npy"))) == 1  # 32 x 1.15, rounded up
    (metrics,) = tmp_path.glob("outputs/imagefolder_resnet18/*/metrics.json")
    assert "test/acc" in metrics.read_text()
