"""The device tables of scripts/benchmark.py: the toolkit where its users train, on a GPU.

* MNIST on the device, whole processes alternated over rounds: the toolkit's `train config=mnist_cnn`
  (eager, `trainer.compile=true`, `trainer.compile=reduce-overhead` with CUDA graphs), the
  hand-written loop and PyTorch Lightning moved to the device as their users do, and the
  compute-only limit: the same model and optimizer on batches already on the device, no data
  pipeline at all. Steady training samples/s (epochs 2..E), epoch time, peak device memory
  (`torch.cuda.max_memory_allocated`; on a CPU the process's peak RSS) and test accuracy.
* A compute-bound job: ResNet-18 on generated images (224 px on a GPU), fp32 and bf16: the
  toolkit's Trainer (its in-memory path: the images on the device, normalized per batch there)
  against the compute-only loop, each in its own process.

    DATA_DIR=../shared/data python scripts/benchmark.py --device cuda
    DATA_DIR=../shared/data python scripts/benchmark.py --mode device --device cpu --quick   # smoke run

A child measurement runs this file with `--child toolkit|compute` and prints one JSON line.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from bench_common import (REPO, Contender, Sample, fmt, json_lines, median_or_none, run_child, script, steady_epoch,
                          steady_training_rate, toolkit)

if TYPE_CHECKING:  # the parent process never imports torch; children import it where they use it
    import torch
    from torch import nn

@dataclass
class Job:
    """A generated training job: model, image shape, batch size, samples per epoch, epochs."""
    model: str
    channels: int
    size: int
    batch_size: int
    samples: int
    epochs: int

    def arguments(self) -> list[str]:
        return ["--model", self.model, "--channels", str(self.channels), "--size", str(self.size),
                "--batch-size", str(self.batch_size), "--samples", str(self.samples), "--epochs", str(self.epochs)]


# ------------------------------------------------------------------------------ child processes
def build_model(model: str, channels: int, size: int) -> nn.Module:
    from decltrain.models.mnist_cnn import MnistCNN
    from decltrain.models.torchvision_classifier import TorchvisionClassifier

    if model == "mnist_cnn":
        return MnistCNN(10, (channels, size, size))
    return TorchvisionClassifier(model, 10, (channels, size, size))


class Stopwatch:
    """Epoch wall times with the device's queued work included: a device sync at both ends."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: list[float] = []

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self._start = time.perf_counter()

    def stop(self) -> None:
        self._sync()
        self.seconds.append(time.perf_counter() - self._start)


def compute_child(job: Job, device_name: str, precision: str) -> dict:
    """The limit: forward, backward and Adam on batches already on the device, in the toolkit's layout."""
    import torch
    import torch.nn.functional as F

    from decltrain.trainer.engine.placement import uses_channels_last
    from decltrain.trainer.engine.precision import Precision

    device = torch.device(device_name)
    torch.manual_seed(0)
    model = build_model(job.model, job.channels, job.size)
    layout = torch.channels_last if uses_channels_last(model, device) else torch.preserve_format
    model = model.to(device, memory_format=layout)  # type: ignore[call-overload]  # Module.to takes both; its stubs not
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = Precision(precision, device).autocast
    batches = [(torch.randn(job.batch_size, job.channels, job.size, job.size, device=device)
                .contiguous(memory_format=layout), torch.randint(0, 10, (job.batch_size,), device=device))
               for _ in range(4)]
    steps = job.samples // job.batch_size
    watch = Stopwatch(device)
    for _ in range(job.epochs):
        watch.start()
        for step in range(steps):
            inputs, targets = batches[step % len(batches)]
            with autocast():
                loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        watch.stop()
    return {"epoch_seconds": watch.seconds, "samples": steps * job.batch_size, **peak_memory(device)}


def toolkit_child(job: Job, device_name: str, precision: str) -> dict:
    """The toolkit's Trainer on the same job: generated uint8 images on its in-memory path."""
    import torch
    from torch import nn

    from decltrain.trainer.engine.callback import Callback, TrainerView
    from decltrain.datasets.base import DataSplits, LoaderSettings
    from decltrain.datasets.in_memory import BatchTransform, InMemory
    from decltrain.trainer.engine.loop import Trainer
    from decltrain.trainer.engine.settings import TrainerSettings
    from decltrain.trainer.tasks.classification import Classification

    device = torch.device(device_name)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (job.samples, job.channels, job.size, job.size), dtype=torch.uint8,
                           generator=generator)
    data = InMemory(images, torch.randint(0, 10, (job.samples,), generator=generator),
                    BatchTransform([], [0.5] * job.channels, [0.25] * job.channels))
    splits = DataSplits(train=data, val=data, test=data, num_classes=10, input_shape=tuple(images.shape[1:]),
                        loader=LoaderSettings(batch_size=job.batch_size, drop_last=True), name="generated")
    watch = Stopwatch(device)

    class EpochTimer(Callback):
        def on_train_epoch_start(self, trainer: TrainerView) -> None:
            watch.start()

        def on_train_epoch_end(self, trainer: TrainerView) -> None:
            watch.stop()

    torch.manual_seed(0)
    model = build_model(job.model, job.channels, job.size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    settings = TrainerSettings(accelerator=device.type, precision=precision, max_epochs=job.epochs,
                               check_val_every_n_epoch=job.epochs + 1)
    trainer = Trainer(settings, model, splits, Classification(nn.CrossEntropyLoss(), "multiclass", 10), optimizer=optimizer,
                      callbacks={"timer": EpochTimer()})
    trainer.fit()
    samples = trainer.num_train_batches * job.batch_size
    return {"epoch_seconds": watch.seconds, "samples": samples, **peak_memory(device)}


def peak_memory(device: torch.device) -> dict:
    import torch

    return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20} if device.type == "cuda" else {}


# ------------------------------------------------------------------------------ the parent side
def child(kind: str, job: Job, precision: str) -> Contender:
    """A `--child` measurement of this file as a contender of the alternating rounds."""
    def run(args: argparse.Namespace, env: dict[str, str], work: Path, index: int) -> Sample:
        command = [sys.executable, __file__, "--child", kind, "--device", args.device, "--precision", precision,
                   *job.arguments()]
        sample, text = run_child(command, env, REPO)
        sample.report = json_lines(text)
        sample.report["steady_epoch_seconds"] = sample.report.pop("epoch_seconds")[1:]  # without warm-up
        return sample
    return run


def samples_per_sec(sample: Sample) -> float | None:
    """Steady training samples/s: samples of an epoch over the median steady epoch."""
    if "run_dir" in sample.report:  # the toolkit's epochs include validation: take its own training rate
        return steady_training_rate(sample.report["run_dir"])
    epoch, samples = steady_epoch(sample), sample.report.get("samples")
    return samples / epoch if epoch and samples else None


def peak_mib(sample: Sample) -> float:
    """Peak device memory the process reported (CUDA), else its peak RSS."""
    return sample.report.get("peak_memory_mb") or sample.peak_mib


def alternate(contenders: dict[str, Contender], args: argparse.Namespace, env: dict[str, str], work: Path,
              console: Console) -> dict[str, list[Sample]]:
    results: dict[str, list[Sample]] = {name: [] for name in contenders}
    for index in range(args.rounds):  # alternate, so a busy moment hits every contender alike
        for name, run in contenders.items():
            sample = run(args, env, work, index)
            results[name].append(sample)
            console.print(f"round {index + 1}/{args.rounds} {name}: {sample.wall:.1f} s")
    return results


def median_of(samples: list[Sample], measure: Callable[[Sample], float | None]) -> float | None:
    return median_or_none([measure(sample) for sample in samples])


def mnist_table(args: argparse.Namespace, env: dict[str, str], work: Path, console: Console) -> None:
    device = f"trainer.accelerator={args.device}"
    # Quick runs have too few steps for the default logging interval to log a rate.
    logging = ["trainer.log_every_n_steps=1"] if args.limit_batches else []
    contenders = {"toolkit (train config=mnist_cnn)": toolkit(device, *logging)}
    if not args.quick:  # compiling takes minutes on a CPU; a smoke run only checks the eager path
        contenders["toolkit, trainer.compile=true"] = toolkit(device, "trainer.compile=true", *logging)
        contenders["toolkit, trainer.compile=reduce-overhead"] = toolkit(device, "trainer.compile=reduce-overhead",
                                                                         *logging)
    contenders["hand-written loop"] = script("handwritten_mnist.py", "--device", args.device)
    lightning = importlib.util.find_spec("lightning") is not None
    if lightning:
        contenders["PyTorch Lightning"] = script("lightning_mnist.py", "--device", args.device)
    batches = args.limit_batches or 4000 // 64
    limit = Job("mnist_cnn", 1, 28, 64, batches * 64, args.epochs)
    contenders["compute-only limit (batches on the device)"] = child("compute", limit, "32")
    results = alternate(contenders, args, env, work, console)

    hand = median_of(results["hand-written loop"], samples_per_sec)
    best = median_of(results["compute-only limit (batches on the device)"], samples_per_sec)
    table = Table(title=f"MNIST CNN on {args.device}, {args.epochs} epochs, median of {args.rounds} alternating rounds")
    for column in ("", "wall s", "epoch s", "samples/s", "x hand-written", "of limit", "peak MiB", "test acc"):
        table.add_column(column, justify="left" if not column else "right")
    for name, samples in results.items():
        rate = median_of(samples, samples_per_sec)
        accuracy = median_of(samples, lambda sample: sample.report.get("test_acc"))
        table.add_row(name, f"{statistics.median(s.wall for s in samples):.1f}", fmt(median_of(samples, steady_epoch)),
                      fmt(rate), fmt(rate / hand if rate and hand else None),
                      fmt(rate / best if rate and best else None), f"{median_of(samples, peak_mib):.0f}",
                      "-" if accuracy is None else f"{accuracy:.4f}")
    if not lightning:
        table.add_row("PyTorch Lightning", "not installed", "", "", "", "", "", "")
    console.print(table)
    console.print("epoch s: the toolkit's epochs include validation and checkpoints; samples/s: training only, "
                  "epochs 2..E")


def compute_bound_table(args: argparse.Namespace, env: dict[str, str], work: Path, console: Console) -> None:
    job = (Job("resnet18", 3, 32, 8, 32, 2) if args.quick else
           Job("resnet18", 3, 224 if args.device == "cuda" else 64, 128 if args.device == "cuda" else 32,
               2560 if args.device == "cuda" else 256, 3))
    contenders = {f"{kind} {precision}": child(kind, job, precision)
                  for precision in ("32", "bf16-mixed") for kind in ("toolkit", "compute")}
    results = alternate(contenders, args, env, work, console)
    rate = {name: median_of(samples, samples_per_sec) for name, samples in results.items()}
    peak = {name: median_of(samples, peak_mib) for name, samples in results.items()}
    table = Table(title=f"Compute-bound: ResNet-18, {job.channels}x{job.size}x{job.size} generated images, batch "
                        f"{job.batch_size}, {job.samples} per epoch, on {args.device}, median of {args.rounds}")
    for column in ("", "samples/s", "of compute-only", "x fp32", "peak MiB", "vs compute-only"):
        table.add_column(column, justify="left" if not column else "right")
    for precision in ("32", "bf16-mixed"):
        for kind, label in (("toolkit", "toolkit (Trainer, in-memory path)"), ("compute", "compute-only loop")):
            name = f"{kind} {precision}"
            limit, fp32 = f"compute {precision}", f"{kind} 32"
            table.add_row(f"{label}, {'fp32' if precision == '32' else 'bf16'}", fmt(rate[name]),
                          fmt(_ratio(rate[name], rate[limit])), fmt(_ratio(rate[name], rate[fp32])),
                          f"{peak[name]:.0f}", fmt(_ratio(peak[name], peak[limit])))
    console.print(table)
    dataset_mib = job.samples * job.channels * job.size ** 2 / 2**20
    console.print(f"the toolkit holds the {job.samples} uint8 images on the device ({dataset_mib:.0f} MiB); "
                  "the compute-only loop cycles 4 float batches")


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value and reference else None


def device_mode(args: argparse.Namespace, env: dict[str, str], work: Path, console: Console) -> None:
    mnist_table(args, env, work, console)
    compute_bound_table(args, env, work, console)


def main() -> None:
    parser = argparse.ArgumentParser(description="One child measurement of the device tables (see benchmark.py).")
    parser.add_argument("--child", choices=("toolkit", "compute"), required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--precision", default="32")
    parser.add_argument("--model", required=True)
    for name in ("channels", "size", "batch-size", "samples", "epochs"):
        parser.add_argument(f"--{name}", type=int, required=True)
    args = parser.parse_args()
    job = Job(args.model, args.channels, args.size, args.batch_size, args.samples, args.epochs)
    measure = toolkit_child if args.child == "toolkit" else compute_child
    print(json.dumps(measure(job, args.device, args.precision)), flush=True)


if __name__ == "__main__":
    main()
