"""The image-folder cache against the PIL DataLoader path, and the fixed start-up cost of `train`.

Used by scripts/benchmark.py (`--mode images`, `--mode startup`); kept apart from its MNIST modes.

* images: generated 256x256 JPEGs in 10 class folders (written once into a temporary folder, the
  smaller counts hard-linked from the largest). For each count, `dataset=image_folder` with
  `dataset.cache=false` (torchvision's `ImageFolder` in a DataLoader with `--workers` workers:
  decode, then the transforms, per image, every epoch) and `dataset.cache=true` (the first epoch
  builds the cache with as many processes; in later epochs as many workers gather batches from it
  and augment them, and this process converts and normalizes them).
  Images per second of the data path alone (every batch drawn, nothing computed), with the
  training transforms of `configs/dataset/image_folder.yaml` and with its evaluation transforms,
  then of a whole training epoch of a small CNN; per-image time from the smallest to the largest count.
* startup: `train config=mnist_cnn trainer.fast_dev_run=true` against
  `python -c "import torch, torchvision"`, alternating, medians.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sized
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from bench_common import installed

if TYPE_CHECKING:  # imported where used: `--help` and the JPEG writer need no torch
    import torch

    from decltrain.datasets.base import DataSplits
    from decltrain.trainer.engine.data import Loader

SIDE, CLASSES = 256, 10


def write_jpegs(root: Path, count: int) -> None:
    """`count` smooth 256x256 JPEGs (quality 90), one class folder per label, deterministic."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / "train" / f"class_{index % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((SIDE, SIDE), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{index:06d}.jpg", quality=90)


def linked_subset(source: Path, target: Path, count: int) -> None:
    """The first `count` images of `source` (by index) as hard links: same files, another folder."""
    for path in sorted((source / "train").rglob("*.jpg")):
        if int(path.stem) < count:
            destination = target / "train" / path.parent.name / path.name
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, destination)


def splits(root: Path, cache: bool, cache_dir: Path, workers: int, image_size: int, eval_only: bool) -> DataSplits:
    """`dataset=image_folder` as the config builds it, all images in the training split."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from decltrain import configs

    node = OmegaConf.load(Path(configs.__file__).parent / "dataset" / "image_folder.yaml")
    node = OmegaConf.merge(node, {"root": str(root), "cache": cache, "cache_dir": str(cache_dir),
                                  "num_workers": workers, "image_size": image_size, "val_fraction": 0.01,
                                  "persistent_workers": True})
    if eval_only:
        node.train_transforms = node.eval_transforms
    return instantiate(OmegaConf.create({"dataset": node}).dataset)


def loader_of(data_splits: DataSplits, seed: int = 0) -> Loader:
    import torch

    from decltrain.trainer.engine import data

    return data.train_loader(data_splits.train, data_splits.loader, seed, torch.device("cpu"))


def epoch(loader: Loader, number: int,
          training: tuple[torch.nn.Module, torch.optim.Optimizer] | None = None) -> tuple[float, int]:
    """Seconds and images of one pass; with a (model, optimizer), a training step per batch."""
    import torch.nn.functional as F
    from torch.utils.data import DistributedSampler

    assert isinstance(loader.sampler, DistributedSampler)  # the training sampler, on either loader
    loader.sampler.set_epoch(number)
    count, start = 0, time.perf_counter()
    for inputs, targets in loader:
        if training is not None:
            model, optimizer = training
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        count += len(inputs)
    return time.perf_counter() - start, count


def small_cnn() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A small convolutional classifier: the compute of a light fine-tuning head, not of a ResNet."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 5, stride=4), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, CLASSES))
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def measure(root: Path, work: Path, workers: int, image_size: int, epochs: int) -> dict[str, float]:
    """Images per second of each path at one folder size (steady: the median of epochs 2..E)."""
    rates: dict[str, float] = {}
    for eval_only, label in ((False, "train transforms"), (True, "eval transforms")):
        pil = loader_of(splits(root, False, work / "unused", workers, image_size, eval_only))
        seconds = [epoch(pil, e) for e in range(epochs)]
        rates[f"PIL, {label}"] = _steady_rate(seconds)
        cache_dir = work / f"cache_{root.name}_{eval_only}"
        start = time.perf_counter()
        cached_splits = splits(root, True, cache_dir, workers, image_size, eval_only)
        assert isinstance(cached_splits.train, Sized)  # torch's Dataset type declares no length
        rates["cache build"] = len(cached_splits.train) / (time.perf_counter() - start)
        cached = loader_of(cached_splits)
        seconds = [epoch(cached, e) for e in range(epochs)]
        rates[f"cache, {label}"] = _steady_rate(seconds)
        shutil.rmtree(cache_dir, ignore_errors=True)
    for cache, label in ((False, "PIL"), (True, "cache")):
        loader = loader_of(splits(root, cache, work / f"cache_train_{root.name}", workers, image_size, False))
        training = small_cnn()
        seconds = [epoch(loader, e, training) for e in range(epochs)]
        rates[f"{label}, epoch with a small CNN"] = _steady_rate(seconds)
    shutil.rmtree(work / f"cache_train_{root.name}", ignore_errors=True)
    return rates


def _steady_rate(passes: list[tuple[float, int]]) -> float:
    steady = passes[1:] or passes
    return statistics.median(count / seconds for seconds, count in steady)


def image_folder_mode(args: argparse.Namespace, console: Console, work: Path) -> None:
    counts = sorted(args.images)
    master = work / f"jpegs_{counts[-1]}"
    start = time.perf_counter()
    write_jpegs(master, counts[-1])
    console.print(f"wrote {counts[-1]} JPEGs of {SIDE}x{SIDE} in {time.perf_counter() - start:.0f} s")
    results: dict[int, dict[str, float]] = {}
    for count in counts:
        root = master if count == counts[-1] else work / f"jpegs_{count}"
        if root != master:
            linked_subset(master, root, count)
        results[count] = measure(root, work, args.workers, args.image_size, args.image_epochs)
        console.print(f"{count} images: " + ", ".join(f"{k} {v:.0f}/s" for k, v in results[count].items()))
    table = Table(title=f"Image folder, {SIDE}x{SIDE} JPEGs, image_size {args.image_size}, {args.workers} workers, "
                        f"images/s (epochs 2..{args.image_epochs}, median)")
    table.add_column("")
    for count in counts:
        table.add_column(f"{count} images", justify="right")
    table.add_column(f"s per image, {counts[-1]} / {counts[0]}", justify="right")
    for name in results[counts[0]]:
        rates = [results[count][name] for count in counts]
        table.add_row(name, *(f"{rate:.0f}" for rate in rates), f"{rates[0] / rates[-1]:.2f}")
    for label in ("train transforms", "eval transforms", "epoch with a small CNN"):
        table.add_row(f"cache / PIL, {label}", *(f"{results[c][f'cache, {label}'] / results[c][f'PIL, {label}']:.2f}"
                                               for c in counts), "")
    table.add_row("cache build / PIL epoch (train transforms)",
                  *(f"{results[c]['cache build'] / results[c]['PIL, train transforms']:.2f}" for c in counts), "")
    console.print(table)


def _timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def startup_mode(args: argparse.Namespace, env: dict[str, str], console: Console, work: Path) -> None:
    """`train`'s start against importing torch, plainly and as `train` imports it (collector paused, then frozen:
    trainer/commands/console_script.py), since that alone changes the import and the exit by about a second."""
    train = [installed("train"), "config=mnist_cnn", "trainer.fast_dev_run=true"]
    imports = {"python -c 'import torch, torchvision'": "import torch, torchvision",
               "the same, collector paused, then frozen": "import gc; gc.disable(); import torch, torchvision; "
                                                          "gc.freeze(); gc.enable()"}
    times: dict[str, list[float]] = {**{name: [] for name in imports}, "train ... fast_dev_run": []}
    for index in range(args.startup_rounds):  # alternate, so a busy moment hits all alike
        for name, code in imports.items():
            times[name].append(_timed([sys.executable, "-c", code], env, work))
        times["train ... fast_dev_run"].append(_timed(train + [f"hydra.run.dir={work / f'fdr_{index}'}"], env, work))
    base, frozen, run = (statistics.median(values) for values in times.values())
    table = Table(title=f"Start-up, median of {args.startup_rounds} alternating rounds")
    for column in ("", "s", "ratio"):
        table.add_column(column, justify="left" if not column else "right")
    for name, seconds in zip(imports, (base, frozen)):
        table.add_row(name, f"{seconds:.2f}", f"{seconds / base:.2f}")
    table.add_row("train config=mnist_cnn trainer.fast_dev_run=true", f"{run:.2f}", f"{run / base:.2f}")
    table.add_row("toolkit's fixed cost (difference to the plain import)", f"{run - base:.2f}", "")
    table.add_row("toolkit's own work (difference to the frozen import)", f"{run - frozen:.2f}", "")
    console.print(table)


def positive_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",")]
    if len(counts) < 2 or min(counts) < 1:
        raise argparse.ArgumentTypeError("give two or more image counts, e.g. 2500,10000")
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=positive_counts, default=[2500, 10000],
                        help="image counts of the image-folder mode, smallest to largest (default 2500,10000)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers and cache-build processes")
    parser.add_argument("--image-size", type=int, default=224, help="dataset.image_size of the image-folder mode")
    parser.add_argument("--image-epochs", type=int, default=3, help="epochs per path; the first is not counted")
    parser.add_argument("--startup-rounds", type=int, default=5, help="alternating rounds of the start-up mode")


def quick(args: argparse.Namespace) -> None:
    """Seconds, not minutes: small folders, small images, two epochs, one start-up round."""
    args.images, args.image_size, args.image_epochs, args.startup_rounds = [32, 64], 32, 2, 1

