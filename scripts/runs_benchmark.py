"""How long `runs ls` takes over many run folders: generates them, then times the installed command.

    python scripts/runs_benchmark.py                 # 1,000 run folders, 5 timed listings
    python scripts/runs_benchmark.py --runs 5000 --repeat 3

Each generated folder holds what `train` writes that `runs` reads (the status record, metrics.json,
`.hydra/config.yaml` and `overrides.yaml`) plus a checkpoint-sized file it must never open. The
figure is wall time of the whole command, Python's start included, as a user would wait for it
(the goal: under 2 s for 1,000 runs). The table shows the newest 100 (`--limit 0`: all, timed too);
`--json` and a filter on a config value (`optimizer.lr=...`) go through every run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """seed: {seed}
model:
  _target_: decltrain.models.MnistCNN
  hidden: {hidden}
  dropout_fc: 0.5
dataset:
  _target_: decltrain.datasets.MNIST
  root: ${{oc.env:DATA_DIR,data}}
  batch_size: 64
optimizer:
  _target_: torch.optim.Adam
  lr: {lr}
trainer:
  max_epochs: 5
  accelerator: auto
callbacks:
  model_checkpoint:
    monitor: val/acc
    mode: max
"""


def generate(root: Path, count: int) -> None:
    """`count` run folders of three experiments under `root`, one in ten of them sweep jobs."""
    for index in range(count):
        experiment = ("mnist_cnn", "mnist_mlp", "cifar10_cnn")[index % 3]
        lr, hidden = (1e-3, 3e-3, 1e-2)[index % 3], (64, 128)[index % 2]
        folder = (root / "multirun" / f"2026-11-{1 + index // 100:02d}_10-00-00" / f"{index // 10 % 10}_{experiment}"
                  if index % 10 == 0 else root / experiment / f"2026-11-{1 + index // 100:02d}_10-00-{index:04d}")
        (folder / ".hydra").mkdir(parents=True)
        (folder / "checkpoints").mkdir()
        overrides = [f"config={experiment}", f"optimizer.lr={lr}", f"model.hidden={hidden}", f"seed={index}"]
        (folder / ".hydra" / "config.yaml").write_text(CONFIG.format(seed=index, hidden=hidden, lr=lr))
        (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"\0" * 4096)
        best = 0.9 + (index % 97) / 1000
        config = {"seed": index, "model._target_": "decltrain.models.MnistCNN", "model.hidden": hidden,
                  "model.dropout_fc": 0.5, "dataset._target_": "decltrain.datasets.MNIST",
                  "dataset.root": "${oc.env:DATA_DIR,data}", "dataset.batch_size": 64,
                  "optimizer._target_": "torch.optim.Adam", "optimizer.lr": lr, "trainer.max_epochs": 5,
                  "trainer.accelerator": "auto", "callbacks.model_checkpoint.monitor": "val/acc",
                  "callbacks.model_checkpoint.mode": "max"}
        (folder / "status.json").write_text(json.dumps({
            "status": "done", "host": "bench", "pid": 1, "started": f"2026-11-{1 + index // 100:02d}T10:00:00+00:00",
            "this_start": "2026-11-01T10:00:00+00:00", "seconds": 120.0, "experiment": experiment,
            "overrides": overrides, "epoch": 5, "step": 4690, "monitor": "val/acc", "mode": "max", "best": best,
            "config": config}))
        (folder / "metrics.json").write_text(json.dumps({
            "monitor": "val/acc", "best": {"epoch": 4, "global_step": 3752, "val/acc": best, "val/loss": 1 - best},
            "last": {"epoch": 5, "global_step": 4690, "val/acc": best - 0.01},
            "test": {"model": "best", "test/acc": best - 0.005}}))


def timed(command: list[str], repeat: int) -> tuple[float, float]:
    """Median and worst wall seconds of `command` over `repeat` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    runs = shutil.which("runs", path=str(Path(sys.executable).parent)) or shutil.which("runs")
    if runs is None:
        sys.exit("the `runs` console script is not installed; run the README's set-up command")
    with tempfile.TemporaryDirectory(prefix="runs-benchmark-") as folder:
        root = Path(folder) / "outputs"
        generate(root, options.runs)
        for label, extra in (("runs ls", []), ("runs ls --limit 0", ["--limit", "0"]), ("runs ls --json", ["--json"]),
                             ("runs ls optimizer.lr=1e-3", ["optimizer.lr=1e-3"])):
            median, worst = timed([runs, "ls", "--root", str(root), *extra], options.repeat)
            print(f"{label:28s} {options.runs} run folders: median {median:.2f} s, worst {worst:.2f} s")


if __name__ == "__main__":
    main()
