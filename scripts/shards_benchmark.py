"""Streamed shards (`dataset=shards`, LitData) against reading the same image files directly.

* throughput: generated 256x256 JPEGs (scripts/image_folder_benchmark.py's) as an image folder,
  and the same files written by `make-shards` into a local folder of shards. Images per second of
  the training data path alone (every batch drawn, nothing computed) with the training transforms
  of configs/dataset/image_folder.yaml and the same loader workers: `dataset=image_folder
  dataset.cache=false` (PIL decodes each file) against `dataset=shards` (PIL decodes the same
  bytes read from the shards), alternated epoch by epoch, medians.
* scale: the shards path on `--small` and `--large` generated 32x32 PNGs: the peak resident
  memory of a pass, each count in its own process (that process, and its largest loader worker),
  and the time per image of passes over the two alternated in one process (`--rounds`), medians.

    python scripts/shards_benchmark.py [--images 2000] [--workers 2] [--rounds 3] [--small 10000 --large 40000]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import image_folder_benchmark
from rich.console import Console
from rich.table import Table


def shard_splits(path: Path, workers: int, image_size: int, transforms_from: str = "image_folder") -> Any:
    """`dataset=shards` as the config builds it, with the transforms of `dataset=<transforms_from>`."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from decltrain import configs

    folder = Path(configs.__file__).parent / "dataset"
    source = OmegaConf.merge(OmegaConf.load(folder / f"{transforms_from}.yaml"), {"image_size": image_size})
    transforms = OmegaConf.to_container(OmegaConf.create({"dataset": source}).dataset.train_transforms, resolve=True)
    node = OmegaConf.merge(OmegaConf.load(folder / "shards.yaml"),
                           {"path": str(path), "num_workers": workers, "val_fraction": 0.01, "test_fraction": 0.01,
                            "train_transforms": transforms, "persistent_workers": True})
    return instantiate(node)


def make_shards(source: Path, out: Path) -> None:
    subprocess.run([str(Path(sys.executable).with_name("make-shards")), str(source), str(out)], check=True,
                   capture_output=True)


def throughput(work: Path, images: int, workers: int, rounds: int, image_size: int) -> dict[str, float]:
    folder = work / "folder"
    image_folder_benchmark.write_jpegs(folder, images)
    make_shards(folder, work / "shards")
    direct = image_folder_benchmark.loader_of(
        image_folder_benchmark.splits(folder, False, work / "unused", workers, image_size, False))
    streamed = image_folder_benchmark.loader_of(shard_splits(work / "shards", workers, image_size))
    seconds: dict[str, list[float]] = {"files": [], "shards": []}
    for number in range(rounds + 1):  # epoch 0 starts the workers: left out
        for name, loader in (("files", direct), ("shards", streamed)):
            elapsed, count = image_folder_benchmark.epoch(loader, number)
            if number:
                seconds[name].append(count / elapsed)
    return {name: statistics.median(rates) for name, rates in seconds.items()}


def write_pngs(root: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / "train" / f"class_{index % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{index:06d}.png")


def scale_child(path: Path, workers: int) -> None:
    """A pass over the shards at `path`; prints the peak memory as JSON."""
    loader = image_folder_benchmark.loader_of(shard_splits(path, workers, 32, transforms_from="cifar10"))
    _, count = image_folder_benchmark.epoch(loader, 0)
    print(json.dumps({"images": count,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def scale(work: Path, counts: list[int], workers: int, rounds: int) -> dict[int, dict[str, float]]:
    results = {}
    for count in counts:
        write_pngs(work / f"pngs{count}", count)
        make_shards(work / f"pngs{count}", work / f"shards{count}")
        child = subprocess.run([sys.executable, __file__, "--child", str(work / f"shards{count}"),
                                "--workers", str(workers)], check=True, capture_output=True, text=True)
        results[count] = json.loads(child.stdout.strip().splitlines()[-1])
    loaders = {count: image_folder_benchmark.loader_of(shard_splits(work / f"shards{count}", workers, 32,
                                                                    transforms_from="cifar10")) for count in counts}
    times: dict[int, list[float]] = {count: [] for count in counts}
    for number in range(rounds + 1):  # pass 0 starts the workers: left out
        for count, loader in loaders.items():
            elapsed, images = image_folder_benchmark.epoch(loader, number)
            if number:
                times[count].append(elapsed / images)
    for count in counts:
        results[count]["seconds_per_image"] = statistics.median(times[count])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=40_000)
    parser.add_argument("--skip-throughput", action="store_true", help="only the scale measurements")
    parser.add_argument("--skip-scale", action="store_true", help="only the throughput measurements")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        scale_child(args.child, args.workers)
        return
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_throughput:
            rates = throughput(Path(tmp), args.images, args.workers, args.rounds, args.image_size)
            table = Table(title=f"{args.images} JPEGs 256x256, train transforms, {args.workers} workers")
            for column in ("path", "images/s", "of files"):
                table.add_column(column)
            for name, rate in rates.items():
                table.add_row(name, f"{rate:.0f}", f"{rate / rates['files']:.0%}")
            console.print(table)
        if args.skip_scale:
            return
        results = scale(Path(tmp), [args.small, args.large], args.workers, args.rounds)
    table = Table(title=f"shards of 32x32 PNGs, {args.workers} workers")
    for column in ("images", "peak RSS MB", "largest worker MB", "ms per image"):
        table.add_column(column)
    for count, row in results.items():
        table.add_row(str(count), f"{row['peak_rss_mb']:.0f}", f"{row['worker_peak_rss_mb']:.0f}",
                      f"{row['seconds_per_image'] * 1000:.3f}")
    small, large = results[args.small], results[args.large]
    console.print(table)
    console.print(f"large/small: peak RSS {large['peak_rss_mb'] / small['peak_rss_mb']:.2f}, "
                  f"worker RSS {large['worker_peak_rss_mb'] / small['worker_peak_rss_mb']:.2f}, "
                  f"time per image {large['seconds_per_image'] / small['seconds_per_image']:.2f}")


if __name__ == "__main__":
    main()
