"""Times the toolkit against the loop a user would write by hand, in one invocation.

Two modes (both by default):

* `process`: whole processes, alternated for `--rounds`: the toolkit's `train config=mnist_cnn`
  (with its validation, checkpoints and TensorBoard), the hand-written loop
  (scripts/handwritten_mnist.py: per-sample PIL transforms, no validation), the same loop with
  the toolkit's OpenMP setting (to separate what the data path and the thread setting are worth)
  and, when installed, PyTorch Lightning (scripts/lightning_mnist.py). Wall time, steady epoch time (median of epochs
  2..E), peak RSS and test accuracy; medians over rounds, ratios to the hand-written loop.
  `train --help` is timed too.
* `images` and `startup` (scripts/image_folder_benchmark.py): the image-folder cache against
  the PIL DataLoader path on generated JPEGs, from 2,500 to 10,000 images; and the fixed
  start-up cost of `train` as a ratio to `import torch, torchvision`, plain and with the garbage
  collector frozen after it, as `train` imports torch.
* `overhead`: the framework alone. One child process per measurement builds the same DataLoader
  (the hand-written loop's per-sample transforms) and model from the same seed, then either a plain loop or
  `Trainer.fit` trains on it; both read the loss every step. Losses must agree; the step-time
  and peak-memory ratios are what the Trainer costs (compare Lightning's parity benchmarks).

* `segmentation` (only when asked): the same alternation for a U-Net on generated 3x128x128 images,
  batch 16: `train config=segmentation_folder dataset.fake=true` against
  scripts/handwritten_segmentation.py (the same model, optimizer and data; both validate each epoch).

* `text_gpt` (only when asked; scripts/text_gpt_benchmark.py): a character GPT, `train
  config=text_gpt` against a nanoGPT-style loop (scripts/handwritten_gpt.py): training tokens/s,
  compiled and in bf16 on a GPU.

Where CUDA is visible (`--device auto`, the default, or `--device cuda`) the device tables of
scripts/device_benchmark.py run instead: the same MNIST contenders on the GPU with samples/s and
peak GPU memory, the compute-only limit, compile modes, and a compute-bound ResNet-18 job in fp32
and bf16. `--mode device --device cpu --quick` runs them on the CPU as a smoke test.

    DATA_DIR=../shared/data python scripts/benchmark.py              # the table of docs/speed.md
    DATA_DIR=../shared/data python scripts/benchmark.py --quick      # a smoke run, seconds
    python scripts/benchmark.py --mode images --images 2500,10000      # the image-folder table
    python scripts/benchmark.py --mode segmentation --rounds 3 --epochs 4   # the U-Net job
    python scripts/benchmark.py --mode text_gpt --device cpu --rounds 3 --epochs 3   # the character GPT
    DATA_DIR=../shared/data python scripts/benchmark.py --mode startup
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import image_folder_benchmark
import text_gpt_benchmark
from bench_common import (REPO, Contender, Sample, fmt, installed, json_lines, median_or_none, run_child, script,
                          steady_epoch, toolkit)
from rich.console import Console
from rich.table import Table


# ------------------------------------------------------------------------------ process mode
def time_help(env: dict[str, str], rounds: int) -> float:
    return statistics.median(run_child([installed("train"), "--help"], env, REPO)[0].wall
                             for _ in range(rounds))


def process_mode(args: argparse.Namespace, env: dict[str, str], work: Path, console: Console) -> None:
    contenders = {"toolkit (train config=mnist_cnn)": toolkit(), "hand-written loop": script("handwritten_mnist.py"),
                  # The same loop with the toolkit's thread setting: what the data path alone is worth.
                  "hand-written, OMP_WAIT_POLICY=PASSIVE": script("handwritten_mnist.py", OMP_WAIT_POLICY="PASSIVE")}
    lightning = importlib.util.find_spec("lightning") is not None
    if lightning:
        contenders["PyTorch Lightning"] = script("lightning_mnist.py")
    table = race(contenders, args, env, work, console)
    if not lightning:
        table.add_row("PyTorch Lightning", "not installed", "", "", "", "", "", "")
    console.print(table)
    console.print(f"train --help: {time_help(env, args.rounds):.2f} s (median of {args.rounds})")


def segmentation_mode(args: argparse.Namespace, env: dict[str, str], work: Path, console: Console) -> None:
    """The U-Net job: `train config=segmentation_folder` on generated 3x128x128 images, batch 16, against
    scripts/handwritten_segmentation.py (the same model, optimizer and data, no augmentation on either side)."""
    same_job = ("dataset.fake=true", "dataset.image_size=128", "dataset.batch_size=16", "dataset.train_transforms=[]",
                "dataset.eval_transforms=[]", f"model.width={args.unet_width}", "callbacks.early_stopping=null")
    contenders = {"toolkit (train config=segmentation_folder)": toolkit(*same_job, config="segmentation_folder",
                                                                        metric="test/pixel_acc"),
                  "hand-written loop": script("handwritten_segmentation.py", "--width", str(args.unet_width)),
                  # The same loop with the toolkit's thread setting, as in the MNIST table.
                  "hand-written, OMP_WAIT_POLICY=PASSIVE": script("handwritten_segmentation.py", "--width",
                                                                  str(args.unet_width), OMP_WAIT_POLICY="PASSIVE")}
    table = race(contenders, args, env, work, console, score="pixel acc")
    console.print(table)


def race(contenders: dict[str, Contender], args: argparse.Namespace, env: dict[str, str], work: Path,
         console: Console, score: str = "test acc") -> Table:
    """Runs the contenders alternately for `args.rounds`; a table of medians and ratios to the hand-written loop."""
    results: dict[str, list[Sample]] = {name: [] for name in contenders}
    for index in range(args.rounds):  # alternate, so a busy moment hits every contender alike
        for name, run in contenders.items():
            sample = run(args, env, work, index)
            results[name].append(sample)
            console.print(f"round {index + 1}/{args.rounds} {name}: {sample.wall:.1f} s, "
                          f"{score} {sample.report['test_acc']:.4f}")
    baseline = results["hand-written loop"]
    table = Table(title=f"Whole process, {args.epochs} epochs, median of {args.rounds} alternating rounds")
    for column in ("", "wall s", "ratio", "epoch s", "ratio", "peak RSS MiB", "ratio", score):
        table.add_column(column, justify="left" if not column else "right")
    base_wall = statistics.median(s.wall for s in baseline)
    base_epoch = median_or_none([steady_epoch(s) for s in baseline])
    base_rss = statistics.median(s.peak_mib for s in baseline)
    for name, samples in results.items():
        wall = statistics.median(s.wall for s in samples)
        epoch = median_or_none([steady_epoch(s) for s in samples])
        rss = statistics.median(s.peak_mib for s in samples)
        table.add_row(name, f"{wall:.1f}", f"{wall / base_wall:.2f}", fmt(epoch),
                      fmt(epoch / base_epoch if epoch and base_epoch else None), f"{rss:.0f}",
                      f"{rss / base_rss:.2f}", f"{statistics.median(s.report['test_acc'] for s in samples):.4f}")
    return table


# ----------------------------------------------------------------------------- overhead mode
def overhead_child(kind: str, data_dir: str, epochs: int, limit: int | None) -> None:
    """One measurement: the plain loop or Trainer.fit on the same DataLoader; prints a JSON line."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, DistributedSampler

    from decltrain.trainer.engine.callback import Callback, TrainerView
    from decltrain.datasets.torchvision_images import build
    from decltrain.models.mnist_cnn import MnistCNN
    from decltrain.trainer.engine import data
    from decltrain.trainer.engine.loop import Trainer
    from decltrain.trainer.engine.settings import TrainerSettings
    from decltrain.trainer.tasks.classification import Classification

    seed = 42
    splits = build("MNIST", data_dir, [0.1307], [0.3081], download=False, in_memory=False, batch_size=64)
    loader = data.train_loader(splits.train, splits.loader, seed, torch.device("cpu"))
    assert isinstance(loader, DataLoader) and isinstance(loader.sampler, DistributedSampler)  # in_memory=False
    steps = min(len(loader), limit or len(loader))
    torch.manual_seed(seed)
    model = MnistCNN(10, splits.input_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses: list[float] = []
    if kind == "plain":
        start = time.perf_counter()
        for epoch in range(epochs):
            model.train()
            loader.sampler.set_epoch(epoch)
            loader.generator.manual_seed(seed + epoch)
            for index, (inputs, targets) in enumerate(loader):
                if index >= steps:
                    break
                loss = F.cross_entropy(model(inputs), targets)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
        seconds = time.perf_counter() - start
    else:
        class RecordLoss(Callback):
            def on_train_batch_end(self, trainer: TrainerView) -> None:
                losses.append(trainer.last_loss)

        settings = TrainerSettings(accelerator="cpu", max_epochs=epochs, log_every_n_steps=1, limit_train_batches=steps,
                                   validate_on_start=False,  # the hand-written loop validates nothing either
                                   check_val_every_n_epoch=epochs + 1, seed=seed)
        trainer = Trainer(settings, model, splits, Classification(nn.CrossEntropyLoss(), "multiclass", 10), optimizer=optimizer,
                          callbacks={"loss": RecordLoss()})
        trainer.train_loader = loader  # the very same DataLoader object the plain loop iterates
        start = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - start
    print(json.dumps({"losses": losses, "step_seconds": seconds / len(losses)}), flush=True)


def overhead_mode(args: argparse.Namespace, env: dict[str, str], console: Console) -> None:
    results: dict[str, list[Sample]] = {"plain": [], "trainer": []}
    for index in range(args.rounds):
        for kind in results:
            command = [sys.executable, __file__, "--overhead-child", kind, "--data-dir", args.data_dir,
                       "--overhead-epochs", str(args.overhead_epochs)]
            if args.limit_batches:
                command += ["--limit-batches", str(args.limit_batches)]
            # Both sides alike; sleeping OpenMP threads keep the timings steady on a shared machine.
            sample, text = run_child(command, {"OMP_WAIT_POLICY": "PASSIVE", **env}, REPO)
            sample.report = json_lines(text)
            results[kind].append(sample)
            console.print(f"round {index + 1}/{args.rounds} {kind}: {sample.report['step_seconds'] * 1000:.1f} ms/step")
    plain, trainer = results["plain"], results["trainer"]
    difference = max(abs(a - b) for p, t in zip(plain, trainer) for a, b in zip(p.report["losses"], t.report["losses"]))
    steps = {kind: statistics.median(s.report["step_seconds"] for s in samples) for kind, samples in results.items()}
    rss = {kind: statistics.median(s.peak_mib for s in samples) for kind, samples in results.items()}
    table = Table(title=f"Framework overhead: one DataLoader, {len(plain[0].report['losses'])} steps, "
                        f"median of {args.rounds} alternating rounds")
    for column in ("", "ms/step", "peak RSS MiB"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("plain loop", f"{steps['plain'] * 1000:.1f}", f"{rss['plain']:.0f}")
    table.add_row("Trainer.fit", f"{steps['trainer'] * 1000:.1f}", f"{rss['trainer']:.0f}")
    table.add_row("ratio", f"{steps['trainer'] / steps['plain']:.3f}", f"{rss['trainer'] / rss['plain']:.2f}")
    console.print(table)
    console.print(f"losses: max abs difference {difference:.3g} over "
                  f"{sum(len(s.report['losses']) for s in plain)} steps")


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}; "
            f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Toolkit vs hand-written loop on MNIST (see the module docstring).")
    parser.add_argument("--mode", choices=("all", "process", "overhead", "images", "startup", "device", "segmentation",
                                           "text_gpt"),
                        default="all", help="all: process, overhead, images and startup on the CPU, or the device "
                        "tables on CUDA; segmentation, text_gpt: the U-Net job, the character GPT (only when asked)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the device tables train (scripts/device_benchmark.py); auto: CUDA when visible")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the whole-process runs")
    parser.add_argument("--overhead-epochs", type=int, default=2, help="epochs of the overhead runs")
    parser.add_argument("--limit-batches", type=int, default=None, help="training batches per epoch (smoke runs)")
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "data"))
    parser.add_argument("--unet-width", type=int, default=16, help="first-level channels of the segmentation job's U-Net")
    parser.add_argument("--quick", action="store_true", help="1 round, 2 epochs of 3 batches: checks that it runs")
    parser.add_argument("--overhead-child", choices=("plain", "trainer"), help=argparse.SUPPRESS)
    image_folder_benchmark.add_arguments(parser)
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    if args.overhead_child:
        return overhead_child(args.overhead_child, args.data_dir, args.overhead_epochs, args.limit_batches)
    if args.quick:
        args.rounds, args.epochs, args.overhead_epochs, args.limit_batches = 1, 2, 1, 3
        image_folder_benchmark.quick(args)
    if args.mode == "images":  # measured in this process: run it as `train` runs (trainer/cli.py), before torch loads
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.device != "cpu":
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            sys.exit("benchmark: --device cuda, but torch sees no CUDA device here; use --device cpu (or auto)")
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    console = Console(width=120)
    console.print(f"machine: {machine()}")
    # Children see the same environment; PYTHONPATH lets the scripts import the repository's packages.
    env = {**os.environ, "DATA_DIR": args.data_dir, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="benchmark-") as work:
        if args.mode == "segmentation":
            segmentation_mode(args, env, Path(work), console)
        elif args.mode == "text_gpt":
            text_gpt_benchmark.text_gpt_mode(args, env, Path(work), console)
        elif args.mode == "device" or (args.mode == "all" and args.device == "cuda"):
            from device_benchmark import device_mode  # scripts/ is on the path of this script

            device_mode(args, env, Path(work), console)
        else:
            if args.mode in ("all", "process"):
                process_mode(args, env, Path(work), console)
            if args.mode in ("all", "overhead"):
                overhead_mode(args, env, console)
            if args.mode in ("all", "images"):
                image_folder_benchmark.image_folder_mode(args, console, Path(work))
            if args.mode in ("all", "startup"):
                image_folder_benchmark.startup_mode(args, env, console, Path(work))
    console.print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
